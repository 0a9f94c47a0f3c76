"""Mailpit's search queries parsed into filters, the filters as bound SQL, and the searched text."""

from __future__ import annotations

import pytest

from services.smtp_sink.api.search import (
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    Field,
    Filter,
    SearchError,
    clean,
    envelope_search_text,
    parse_query,
    search_text,
    sql_condition,
)
from services.smtp_sink.mailbox import Envelope
from services.smtp_sink.mime import read_message
from tests.unit.smtp_sink.messages import PLAIN, multipart_with_attachment


def test_free_words_and_quoted_phrases_are_cleaned_text_filters() -> None:
    assert parse_query('Hello "Two  Words" <bob@example.com>') == (
        Filter(Field.TEXT, "hello"),
        Filter(Field.TEXT, "two words"),
        Filter(Field.TEXT, "bob@example.com"),
    )


def test_filters_have_case_insensitive_prefixes() -> None:
    assert parse_query("TO:Bob@Example.com From:ann cc:c bcc:b reply-to:r addressed:a") == (
        Filter(Field.TO, "bob@example.com"),
        Filter(Field.FROM, "ann"),
        Filter(Field.CC, "c"),
        Filter(Field.BCC, "b"),
        Filter(Field.REPLY_TO, "r"),
        Filter(Field.ADDRESSED, "a"),
    )


def test_a_subject_is_kept_as_typed_and_may_be_a_quoted_phrase() -> None:
    assert parse_query('subject:"Big News, Today"') == (Filter(Field.SUBJECT, "Big News, Today"),)


def test_a_message_id_loses_its_angle_brackets() -> None:
    assert parse_query("message-id:<Abc-1@example.com>") == (
        Filter(Field.MESSAGE_ID, "abc-1@example.com"),
    )


def test_a_leading_minus_or_bang_negates() -> None:
    assert parse_query('-to:bob !subject:"two words" -word -') == (
        Filter(Field.TO, "bob", exclude=True),
        Filter(Field.SUBJECT, "two words", exclude=True),
        Filter(Field.TEXT, "word", exclude=True),
        Filter(Field.TEXT, "-"),  # a lone minus is a word, as in Mailpit
    )


def test_flags_and_sizes() -> None:
    assert parse_query("is:read -is:unread has:attachments larger:10kb smaller:1.5M") == (
        Filter(Field.READ),
        Filter(Field.UNREAD, exclude=True),
        Filter(Field.ATTACHMENT),
        Filter(Field.LARGER, 10 * 1024),
        Filter(Field.SMALLER, int(1.5 * 1024 * 1024)),
    )


def test_words_made_only_of_separators_are_skipped() -> None:
    assert parse_query('hello <> ; ""') == (Filter(Field.TEXT, "hello"),)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", "no search query"),
        ("  <> , ", "no search query"),
        ('subject:"unclosed', "unclosed double quote"),
        ("to:", "to: needs a value"),
        ('-subject:""', "subject: needs a value"),
        ("larger:huge", "larger: needs a size"),
        ("smaller:10gb", "smaller: needs a size"),
        ("after:2025-01-01", "does not support Mailpit's after: filter"),
        ("-has:inline", "does not support Mailpit's has:inline filter"),
    ],
)
def test_a_bad_query_is_an_error_that_says_why(query: str, error: str) -> None:
    with pytest.raises(SearchError, match=error):
        parse_query(query)


def test_values_are_bound_parameters_never_sql() -> None:
    hostile = 'subject:"x\' OR 1=1; DROP TABLE messages; --"'

    condition, parameters = sql_condition(parse_query(hostile))

    assert "DROP" not in condition
    assert "'" not in condition.replace("ESCAPE '\\'", "")
    assert parameters == ("%x' OR 1=1; DROP TABLE messages; --%",)


def test_like_wildcards_in_a_value_match_literally() -> None:
    _, parameters = sql_condition(parse_query(r"subject:100%_off\now"))

    assert parameters == (r"%100\%\_off\\now%",)


def test_address_values_are_matched_as_stored_json() -> None:
    _, parameters = sql_condition(parse_query('to:"o\'brien \\ co"'))

    assert parameters == (r"%o'brien \\\\ co%",)


def test_every_filter_must_hold_and_a_negated_one_must_not() -> None:
    condition, parameters = sql_condition(parse_query("-from:ann hello addressed:bob"))

    assert condition.count(" AND ") == 2
    assert condition.startswith("NOT (json_extract(m.addresses, '$.From') LIKE ?")
    assert "instr(text, ?)" in condition
    assert parameters == ("%ann%", "hello", *("%bob%",) * 5)


def test_clean_is_mailpits_clean_string() -> None:
    assert clean('  Ann "Sender" <ANN@example.com>;\r\n(Team),\tBob\ufeff ') == (
        "ann sender ann@example.com team bob"
    )


def test_search_text_has_the_addresses_subject_and_body() -> None:
    text = search_text(read_message(PLAIN))

    assert text.startswith("hello bob ")
    for words in ("ann sender ann@example.com", "carol carol@example.com", "dan@example.com"):
        assert words in text
    assert text.endswith("first line of the body. second line.")


def test_search_text_has_the_decoded_html_body_and_file_names() -> None:
    text = search_text(read_message(multipart_with_attachment()))

    assert "résumé attached" in text
    assert "zoë zoe@example.com" in text
    assert "html version & more" in text
    assert "resume.pdf" in text
    assert "plain version" not in text  # like Mailpit: the HTML body when there is one


def test_an_unreadable_message_is_found_by_its_envelope() -> None:
    envelope = Envelope("Ann@Example.com", ("bob@example.com", "carol@example.com"))

    assert envelope_search_text(envelope) == "ann@example.com bob@example.com carol@example.com"


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("larger:9223372036854775807", 2**63 - 1),  # SQLite's largest integer, exactly
        ("smaller:8796093022207.99mb", 9223372036854765322),
        ("larger:0.1kb", 102),
    ],
)
def test_a_size_up_to_sqlites_largest_integer_is_read_exactly(query: str, size: int) -> None:
    assert parse_query(query)[0].value == size


@pytest.mark.parametrize(
    "size", ["9223372036854775808", "99999999999999999999999", "9999999999999999999mb", "9" * 400]
)
def test_a_size_beyond_sqlites_integers_is_an_error_that_says_so(size: str) -> None:
    with pytest.raises(SearchError) as error:
        parse_query(f"larger:{size}")

    assert str(error.value).startswith(f"Error: larger:{size[:40]}")
    assert "is more bytes than the sink can compare (at most 9223372036854775807)" in str(
        error.value
    )
    assert "use a smaller size, such as 10mb" in str(error.value)


def test_a_size_is_in_ascii_digits_as_go_reads_them() -> None:
    with pytest.raises(SearchError, match="larger: needs a size"):
        parse_query("larger:\uff11\uff12")  # fullwidth "12"


def test_a_query_of_up_to_the_most_terms_and_characters_is_read() -> None:
    terms = " ".join(f"w{n}" for n in range(MAX_QUERY_TERMS))

    assert len(parse_query(terms)) == MAX_QUERY_TERMS
    assert parse_query("x" * MAX_QUERY_CHARS) == (Filter(Field.TEXT, "x" * MAX_QUERY_CHARS),)


def test_more_terms_than_the_most_is_an_error_that_says_how_many() -> None:
    terms = " ".join(f"w{n}" for n in range(5000))

    with pytest.raises(SearchError) as error:
        parse_query(terms[: MAX_QUERY_CHARS - 100])

    assert str(error.value) == (
        "Error: the search query has more than 50 terms, the most the sink takes: every term "
        "must match, so search for fewer, more distinctive words"
    )


def test_a_query_longer_than_the_most_characters_is_an_error_that_says_how_long() -> None:
    with pytest.raises(SearchError) as error:
        parse_query("x" * (MAX_QUERY_CHARS + 1))

    assert str(error.value) == (
        "Error: the search query is 4097 characters long; the sink takes at most 4096: "
        "search for fewer or shorter words"
    )
