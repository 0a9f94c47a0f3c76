// The sink's web inbox: polls the sink's Mailpit API, lists the messages, shows one.
// Everything from an email is shown as text (textContent, never innerHTML); its HTML body goes
// only into a sandboxed iframe whose srcdoc starts with a CSP that loads nothing remote.
"use strict";

(() => {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 10000; // a background tab need not scan the mailbox every second
  const TYPING_MS = 250;
  const PAGE_SIZE = 100;
  const HTML_VIEW_CSP =
    '<meta http-equiv="Content-Security-Policy" ' +
    "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">";

  const byId = (id) => document.getElementById(id);
  const list = byId("messages");
  const view = byId("view");

  let query = "";
  let shownListing = null; // what the list shows, to skip re-rendering an unchanged poll
  let selectedId = null;
  let pollTimer = null;
  let typingTimer = null;
  let polls = 0; // answers to an older poll (an older query) are dropped

  // A DOM element with attributes; children are nodes or strings, and strings become text.
  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function address(mailbox) {
    if (!mailbox) return "";
    if (mailbox.Name && mailbox.Address) return `${mailbox.Name} <${mailbox.Address}>`;
    return mailbox.Address || mailbox.Name || "";
  }

  function addresses(mailboxes) {
    return (mailboxes || []).map(address).join(", ");
  }

  function receivedAt(iso) {
    const date = new Date(iso);
    const sameDay = date.toDateString() === new Date().toDateString();
    const time = date.toLocaleTimeString([], { hour12: false });
    return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
  }

  function showStatus(text, isError) {
    const status = byId("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
    status.hidden = !text;
  }

  async function poll() {
    clearTimeout(pollTimer);
    const thisPoll = ++polls;
    const url = query
      ? `/api/v1/search?query=${encodeURIComponent(query)}&limit=${PAGE_SIZE}`
      : `/api/v1/messages?limit=${PAGE_SIZE}`;
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (thisPoll !== polls) return;
      if (!response.ok) {
        // The sink's 400 answers say what is wrong with the query in plain text.
        const reason = await response.text();
        if (thisPoll !== polls) return;
        showStatus(reason || `The sink answered ${response.status}`, true);
        renderList({ messages: [], total: 0, unread: 0, messages_count: 0 });
        return;
      }
      const listing = await response.json();
      if (thisPoll !== polls) return;
      showStatus("", false);
      renderList(listing);
    } catch (error) {
      if (thisPoll === polls) showStatus(`The sink does not answer (${error}); retrying.`, true);
    } finally {
      if (thisPoll === polls) {
        pollTimer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
      }
    }
  }

  function listingKey(listing) {
    return JSON.stringify([
      query,
      listing.total,
      listing.unread,
      listing.messages_count,
      listing.messages.map((m) => [m.ID, m.Read, m.MessageIDCount]),
    ]);
  }

  function renderList(listing) {
    const key = listingKey(listing);
    if (key === shownListing) return;
    shownListing = key;

    const rows = listing.messages.map(messageRow);
    list.replaceChildren(...rows);
    byId("empty").hidden = rows.length > 0;
    byId("empty").textContent = query ? "No message matches the search." : "No messages.";

    const shown = listing.messages.length < listing.messages_count
      ? ` (the newest ${listing.messages.length} shown)`
      : "";
    byId("count").textContent = query
      ? `${listing.messages_count} of ${listing.total} match${shown}`
      : `${listing.total} messages, ${listing.unread} unread${shown}`;
  }

  function messageRow(message) {
    const subject = element(
      "span",
      { "data-testid": "message-subject" },
      message.Subject || "(no subject)",
    );
    const subjectCell = element("td", { title: message.Subject });
    if (message.Duplicate) {
      subjectCell.append(
        element(
          "span",
          {
            class: "badge duplicate",
            "data-testid": "duplicate-badge",
            title: `${message.MessageIDCount} stored messages have Message-ID <${message.MessageID}>`,
          },
          `Duplicate ×${message.MessageIDCount}`,
        ),
      );
    }
    subjectCell.append(subject);

    const classes = [message.Read ? "read" : "unread", message.Duplicate ? "duplicate" : ""];
    const row = element(
      "tr",
      {
        class: classes.join(" ").trim(),
        "data-testid": "message-row",
        "data-id": message.ID,
        "aria-selected": String(message.ID === selectedId),
        tabindex: "0",
      },
      element("td", { class: "when", title: message.Created }, receivedAt(message.Created)),
      element("td", { "data-testid": "message-from", title: address(message.From) }, address(message.From)),
      element("td", { "data-testid": "message-to", title: addresses(message.To) }, addresses(message.To)),
      subjectCell,
    );
    row.addEventListener("click", () => openMessage(message.ID));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") openMessage(message.ID);
    });
    return row;
  }

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    return response.json();
  }

  async function openMessage(id) {
    selectedId = id;
    for (const row of list.children) {
      row.setAttribute("aria-selected", String(row.dataset.id === id));
    }
    const path = `/api/v1/message/${encodeURIComponent(id)}`;
    try {
      const [message, headers] = await Promise.all([
        fetchJson(path),
        fetchJson(`${path}/headers`),
      ]);
      if (selectedId !== id) return;
      renderMessage(message, headers);
    } catch (error) {
      if (selectedId === id) showStatus(`Could not open the message: ${error.message}`, true);
    }
  }

  function renderMessage(message, headers) {
    byId("view-subject").textContent = message.Subject || "(no subject)";

    const duplicate = byId("view-duplicate");
    duplicate.hidden = !message.Duplicate;
    duplicate.textContent = message.Duplicate
      ? `Duplicate: ${message.MessageIDCount} stored messages have Message-ID <${message.MessageID}>`
      : "";

    const meta = [
      ["From", address(message.From)],
      ["To", addresses(message.To)],
      ["Cc", addresses(message.Cc)],
      ["Bcc", addresses(message.Bcc)],
      ["Date", message.Date],
      ["Message-ID", message.MessageID],
      ["Size", `${message.Size} bytes`],
    ].filter(([, value]) => value);
    byId("view-meta").replaceChildren(
      ...meta.flatMap(([name, value]) => [element("dt", {}, name), element("dd", {}, value)]),
    );

    const html = byId("view-html");
    html.hidden = !message.HTML;
    byId("no-html").hidden = Boolean(message.HTML);
    // srcdoc is the one place email markup goes: sandboxed (no scripts), and its CSP comes
    // first so that nothing in the email can load before it.
    html.srcdoc = message.HTML ? HTML_VIEW_CSP + message.HTML : "";

    byId("view-text").textContent = message.Text;

    byId("view-headers").replaceChildren(
      ...Object.entries(headers).flatMap(([name, values]) =>
        values.map((value) =>
          element("tr", { "data-testid": "message-header" }, element("th", {}, name), element("td", {}, value)),
        ),
      ),
    );
    view.hidden = false;
    // Opening marks it read: show that without waiting for the next poll.
    shownListing = null;
    poll();
  }

  function closeMessage() {
    selectedId = null;
    view.hidden = true;
    byId("view-html").srcdoc = "";
    for (const row of list.children) row.setAttribute("aria-selected", "false");
  }

  function search(text) {
    query = text.trim();
    shownListing = null;
    poll();
  }

  byId("search").addEventListener("input", (event) => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => search(event.target.value), TYPING_MS);
  });
  byId("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typingTimer);
    search(byId("search").value);
  });

  byId("clear").addEventListener("click", async () => {
    if (!window.confirm("Delete every message in the sink? This cannot be undone.")) return;
    try {
      const response = await fetch("/api/v1/messages", { method: "DELETE" });
      if (!response.ok) throw new Error(await response.text());
    } catch (error) {
      showStatus(`Could not delete the messages: ${error.message}`, true);
      return;
    }
    closeMessage();
    shownListing = null;
    poll();
  });

  byId("close").addEventListener("click", closeMessage);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !view.hidden) closeMessage();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });

  poll();
})();
