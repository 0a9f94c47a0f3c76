"""Mailpit's search queries parsed into filters, the filters as bound SQL, and the searched text."""

from __future__ import annotations

import pytest

from services.smtp_sink.mailbox import Envelope
from services.smtp_sink.mime import read_message
from services.smtp_sink.search import (
    Field,
    Filter,
    SearchError,
    clean,
    envelope_search_text,
    parse_query,
    search_text,
    sql_condition,
)
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
