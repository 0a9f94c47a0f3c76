// The console page: draws each snapshot the server streams (Server-Sent Events).
// Everything that comes from Kafka or an email is put in the page as text (textContent),
// never as markup: a subject is shown as the characters it has, whatever they are.
"use strict";

const SLOTS = 30; // offset boxes drawn per partition; older ones are counted, not drawn
const MIN_STALE_SECONDS = 3; // no snapshot for this long (or 3 refreshes): the page is not live
const BROKER_STATUS = { up: "up", down: "down", not_answering: "not answering" };

let lastSnapshot = null;
let lastReceivedAt = 0;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child); // strings become text nodes
  return node;
}

function byId(id) {
  return document.getElementById(id);
}

function formatNumber(value, digits = 0) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function formatSeconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${(value * 1000).toFixed(1)} ms` : `${value.toFixed(2)} s`;
}

function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

// How long until a due time: "in 43 s", "in 14 min 5 s", "in 2 h 3 min"; past it, "3 s ago".
function formatDueIn(seconds) {
  if (seconds === null || seconds === undefined) return "due time unreadable";
  const whole = Math.round(Math.abs(seconds));
  let span;
  if (whole < 120) span = `${whole} s`;
  else if (whole < 7200) span = `${Math.floor(whole / 60)} min ${whole % 60} s`;
  else span = `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

// "next due in 43 s"; once past it (the retry consumer has not taken it yet), "next was due 5 s ago".
function nextDue(seconds) {
  return `next ${seconds !== null && seconds < 0 ? "was due" : "due"} ${formatDueIn(seconds)}`;
}

// Which offsets a lane draws: the last SLOTS, and when CURRENT-OFFSET is older than those, a
// few around it too, with the records between them counted (the pointer never leaves the page).
function runsToDraw(start, current, logEnd) {
  const lastFirst = Math.max(start, logEnd - SLOTS);
  if (current === null || current >= lastFirst) return { older: lastFirst - start, runs: [[lastFirst, logEnd]] };
  const aroundFirst = Math.max(start, current - 3);
  const aroundLast = current + 8;
  const tailFirst = Math.max(aroundLast + 1, logEnd - (SLOTS - 12));
  return { older: aroundFirst - start, runs: [[aroundFirst, aroundLast], [tailFirst, logEnd]] };
}

function slot(offset, current, logEnd) {
  const isEnd = offset === logEnd;
  const consumed = current !== null && offset < current;
  const node = el("div", {
    class: `slot${consumed ? " consumed" : ""}${isEnd ? " end" : ""}`,
    "data-offset": offset,
    title: isEnd ? `offset ${offset}: the next record written goes here` : `offset ${offset}`,
  });
  if (offset === current) {
    node.append(el("span", { class: "marker current", "data-testid": "current-offset-marker", "data-offset": offset, text: "▼ CURRENT" }));
  }
  node.append(el("span", { class: "box", text: isEnd ? "" : String(offset) }));
  if (isEnd) {
    node.append(el("span", { class: "marker log-end", "data-testid": "log-end-marker", "data-offset": offset, text: "▲ LOG-END" }));
  }
  return node;
}

function lane(topic, row, testid = "partition-lane") {
  const logEnd = row.log_end_offset;
  const current = row.current_offset; // null: the group has committed nothing here yet
  const { older, runs } = runsToDraw(row.log_start_offset, current, logEnd);
  const slots = el("div", { class: "slots" });
  runs.forEach(([first, last], index) => {
    if (index > 0) {
      const between = first - runs[index - 1][1] - 1;
      slots.append(el("span", { class: "gap", title: `${between} records not drawn`, text: `… ${between} …` }));
    }
    for (let offset = first; offset <= last; offset++) slots.append(slot(offset, current, logEnd));
  });
  const owner = row.member ? memberName(row.member) : "no member owns it";
  const lagText = row.lag === null ? "–" : String(row.lag);
  return el(
    "div",
    {
      class: `lane${row.lag ? " lagging" : ""}${row.offsets_live ? "" : " stale"}`,
      "data-testid": testid,
      "data-partition": row.partition,
      "data-current-offset": current === null ? "" : current,
      "data-log-end-offset": logEnd,
      "data-lag": row.lag === null ? "" : row.lag,
      "data-leader": row.leader === null ? "" : row.leader,
      "data-replicas": row.replicas.join(","),
      "data-isr": row.isr.join(","),
      "data-under-replicated": row.under_replicated,
      "data-offsets-live": row.offsets_live,
    },
    el(
      "div",
      { class: "lane-head" },
      el("strong", { text: `${topic}-${row.partition}` }),
      el("span", { class: "dim", text: " CURRENT-OFFSET " }),
      el("span", { "data-testid": "lane-current-offset", text: current === null ? "-" : String(current) }),
      el("span", { class: "dim", text: " LOG-END-OFFSET " }),
      el("span", { "data-testid": "lane-log-end-offset", text: String(logEnd) }),
      el("span", { class: "dim", text: " LAG " }),
      el("strong", { class: "lag", "data-testid": "lane-lag", text: lagText }),
      replicasOf(row),
      el("span", { class: "owner", "data-testid": "lane-owner", text: owner }),
    ),
    el(
      "div",
      { class: "lane-body" },
      el("span", { class: "older", text: older > 0 ? `${older} older` : "" }),
      slots,
    ),
  );
}

// Where the partition's copies are, as kafka-topics.sh --describe says it: Leader, Replicas, Isr.
function replicasOf(row) {
  const where = el("span", { class: "replicas", "data-testid": "lane-replicas" });
  if (row.replicas.length === 0) return where;
  where.append(
    el("span", { class: "dim", text: " leader " }),
    el("span", { "data-testid": "lane-leader", text: row.leader === null ? "none" : String(row.leader) }),
    el("span", { class: "dim", text: " ISR " }),
    el("span", { "data-testid": "lane-isr", text: row.isr.join(",") || "none" }),
    el("span", { class: "dim", text: ` of ${row.replicas.join(",")}` }),
  );
  if (row.under_replicated) {
    where.append(" ", el("span", { class: "badge", "data-testid": "under-replicated-badge", text: "UNDER-REPLICATED" }));
  }
  if (!row.offsets_live) {
    where.append(el("span", { class: "dim", text: " offsets as last read: the leader does not answer" }));
  }
  return where;
}

// A group's members, one row each, their test ids named after `prefix` ("member":
// email-send-group's, "member-row" and "member-instance-id").
function membersRows(members, partitionsOf, nobody, prefix) {
  if (members.length === 0) return [el("tr", {}, el("td", { colspan: 4, class: "dim", text: nobody }))];
  return members.map((member) =>
    el(
      "tr",
      { "data-testid": `${prefix}-row` },
      el("td", { text: member.client_id }),
      el("td", { text: member.host }),
      el("td", { "data-testid": `${prefix}-instance-id`, text: member.group_instance_id || "– (dynamic)" }),
      el("td", { text: partitionsOf(member) || "none" }),
    ),
  );
}

function groupPill(node, state, error) {
  node.textContent = state || "?";
  node.className = `pill ${state === "Stable" ? "ok" : "warn"}${error ? " stale" : ""}`;
  node.title = error ? `as last read: ${error}` : "";
}

// The retry topics: for each partition, the records waiting for the retry group and when the
// first ones are due (read from their due_at headers).
function renderRetries(retries) {
  groupPill(byId("retry-group-state"), retries.state, retries.error);
  byId("retry-group").textContent = retries.group;
  byId("retry-pending").textContent = retries.pending === null ? "?" : String(retries.pending);
  const next = byId("retry-next-due");
  next.textContent = retries.next_due_at ? nextDue(retries.next_due_in_seconds) : retries.pending ? "due times not read yet" : "";
  next.title = retries.next_due_at ? timeOf(retries.next_due_at) : "";
  const rows = [];
  for (const topic of retries.topics) {
    const due = topic.next_due_at ? ` · ${nextDue(topic.next_due_in_seconds)}` : "";
    const left = topic.in_schedule ? "" : " (left by an earlier schedule: still drained)";
    rows.push(
      el(
        "tr",
        { class: "retry-topic", "data-testid": "retry-topic", "data-topic": topic.topic, "data-pending": topic.pending },
        el("td", { colspan: 6 }, el("strong", { text: topic.topic }), el("span", { class: "dim", text: `${left} · waiting ${topic.pending}${due}` })),
      ),
    );
    for (const row of topic.partitions) rows.push(retryRow(topic.topic, row));
  }
  byId("retry-rows").replaceChildren(...rows);
}

function retryRow(topic, row) {
  const shown = row.due.slice(0, 3).map((record) => formatDueIn(record.due_in_seconds));
  let due = shown.join(", ");
  if (row.due.length > shown.length) due += `, … (${row.due.length} read)`;
  if (row.pending > row.due.length && row.due.length > 0) due += ` · the first ${row.due.length} of ${row.pending}`;
  if (row.pending > 0 && row.due.length === 0) due = "not read yet";
  return el(
    "tr",
    {
      class: `retry-partition${row.pending ? " waiting" : ""}${row.offsets_live ? "" : " stale"}`,
      "data-testid": "retry-partition",
      "data-topic": topic,
      "data-partition": row.partition,
      "data-pending": row.pending,
      "data-next-due-in": row.next_due_in_seconds === null ? "" : row.next_due_in_seconds,
      title: row.due.map((record) => `@${record.offset}: ${record.due_at || "no readable due_at header"}`).join("\n"),
    },
    el("td", { text: `${topic}-${row.partition}` }),
    el("td", { text: row.current_offset === null ? "-" : String(row.current_offset) }),
    el("td", { text: String(row.log_end_offset) }),
    el("td", { "data-testid": "retry-waiting", text: String(row.pending) }),
    el("td", { "data-testid": "retry-due", text: due }),
    el("td", { text: row.member ? memberName(row.member) : row.pending ? "no member owns it" : "" }),
  );
}

// email.events read by the API's group: the same partition picture as the worker's.
function renderEventsConsumer(consumer) {
  byId("events-topic").textContent = consumer.topic;
  byId("status-group").textContent = consumer.group;
  groupPill(byId("events-group-state"), consumer.state, consumer.error);
  byId("events-total-lag").textContent = consumer.total_lag === null ? "?" : String(consumer.total_lag);
  byId("events-lanes").replaceChildren(...consumer.partitions.map((row) => lane(consumer.topic, row, "events-lane")));
  byId("events-members").replaceChildren(
    ...membersRows(consumer.members, (member) => member.partitions.map((p) => `${consumer.topic}-${p}`).join(", "), "no member: no API is reading the events", "events-member"),
  );
}

function memberName(member) {
  const name = `${member.client_id} (${member.host})`;
  return member.group_instance_id ? `${member.group_instance_id} (static) · ${name}` : name;
}

function renderBrokers(snapshot) {
  byId("brokers").replaceChildren(
    ...snapshot.brokers.map((broker) =>
      el(
        "span",
        {
          class: `broker ${broker.status}`,
          "data-testid": "broker",
          "data-node-id": broker.node_id === null ? "" : broker.node_id,
          "data-status": broker.status,
          title: broker.error || (broker.leads.length ? `leads ${broker.leads.join(", ")}` : "leads no partition of these topics"),
        },
        el("strong", { text: broker.node_id === null ? "broker ?" : `broker ${broker.node_id}` }),
        el("span", { class: "address", text: ` ${broker.address} ` }),
        el("span", { class: "broker-status", "data-testid": "broker-status", text: BROKER_STATUS[broker.status] || broker.status }),
        el("span", { class: "dim", text: ` · leads ${broker.leads.length}${broker.coordinates.length ? ` · coordinates ${broker.coordinates.join(", ")}` : ""}` }),
      ),
    ),
  );
  const short = snapshot.under_replicated;
  const replication = byId("replication");
  replication.textContent = short.length
    ? `under-replicated (fewer replicas in sync than the partition has): ${short.join(", ")}`
    : snapshot.brokers.length ? "every partition has all its replicas in sync" : "";
  replication.className = short.length ? "short" : "dim";
}

function renderKafkaStatus(snapshot) {
  const status = byId("kafka-status");
  const age = byId("data-age");
  const kafka = snapshot.kafka;
  if (kafka.live) {
    status.textContent = "live";
    status.className = "pill ok";
    age.textContent = "";
  } else {
    status.textContent = `Kafka is not answering: ${kafka.error || "unknown error"}`;
    status.className = "pill bad";
    age.textContent = kafka.as_of
      ? `the offsets below are ${kafka.age_seconds.toFixed(0)} s old (last read ${timeOf(kafka.as_of)}), not live`
      : "no offsets read yet";
  }
  document.body.classList.toggle("kafka-down", !kafka.live);
}

function render(snapshot) {
  renderKafkaStatus(snapshot);
  byId("topic").textContent = snapshot.topic;
  byId("group").textContent = snapshot.group;
  const state = byId("group-state");
  state.textContent = snapshot.group_state || "?";
  state.className = `pill ${snapshot.group_state === "Stable" ? "ok" : "warn"}${snapshot.group_error ? " stale" : ""}`;
  const coordinator = snapshot.group_coordinator === null ? "" : `, coordinator broker ${snapshot.group_coordinator}`;
  state.title = snapshot.group_error
    ? `as last read: ${snapshot.group_error}`
    : `assignor ${snapshot.group_protocol || "–"}${coordinator}`;
  byId("group-generation").textContent = snapshot.group_generation === null ? "?" : String(snapshot.group_generation);
  renderBrokers(snapshot);
  byId("total-lag").textContent = snapshot.total_lag === null ? "?" : String(snapshot.total_lag);

  byId("lanes").replaceChildren(...snapshot.partitions.map((row) => lane(snapshot.topic, row)));
  const dlq = snapshot.dlq;
  const ends = Object.entries(dlq.end_offsets).map(([p, end]) => `${dlq.topic}-${p}: ${end}`).join(", ");
  byId("dlq").replaceChildren(
    el("span", { text: `${dlq.topic}: ` }),
    el("strong", { "data-testid": "dlq-count", text: dlq.count === null ? "?" : String(dlq.count) }),
    el("span", { text: ` dead letters${ends ? ` (LOG-END-OFFSET ${ends})` : ""}` }),
  );

  const rates = snapshot.rates;
  byId("rate-accepted").textContent = formatNumber(rates.accepted_per_second, 1);
  byId("rate-delivered").textContent = formatNumber(rates.delivered_per_second, 1);
  byId("latency-p50").textContent = formatSeconds(rates.latency_p50_seconds);
  byId("latency-p99").textContent = formatSeconds(rates.latency_p99_seconds);
  byId("latency-window").textContent = rates.latency_messages ? `over the last ${rates.latency_messages} messages` : "";
  byId("totals").textContent = `${formatNumber(rates.accepted_total)} / ${formatNumber(rates.delivered_total)} / ${formatNumber(rates.duplicates_total)}`;
  const sources = snapshot.sources;
  for (const [source, id] of [["api", "rate-accepted"], ["sink", "rate-delivered"]]) {
    byId(id).title = sources[source].live ? "" : `${source}: ${sources[source].error}`;
    byId(id).classList.toggle("unknown", !sources[source].live);
  }

  byId("members").replaceChildren(
    ...membersRows(snapshot.members, (member) => member.partitions.map((p) => `${snapshot.topic}-${p}`).join(", "), "no member: no worker is running", "member"),
  );
  renderRetries(snapshot.retries);
  renderEventsConsumer(snapshot.events_consumer);

  byId("timeline").replaceChildren(
    ...snapshot.timeline.map((event) =>
      el(
        "li",
        { class: `event ${event.kind}`, "data-testid": "timeline-event", "data-kind": event.kind },
        el("time", { text: timeOf(event.at) }),
        el("span", { text: event.text }),
      ),
    ),
  );

  byId("recent").replaceChildren(
    ...snapshot.recent_messages.map((message) =>
      el(
        "tr",
        { class: message.duplicate ? "duplicate" : "", "data-testid": "recent-message", title: message.message_id },
        el("td", { text: timeOf(message.received_at) }),
        el("td", { text: message.from }),
        el("td", { text: message.to.join(", ") }),
        el("td", { "data-testid": "recent-subject", text: message.subject }),
        el(
          "td",
          {},
          message.duplicate
            ? el("span", { class: "badge", "data-testid": "duplicate-badge", text: `DUPLICATE ×${message.message_id_count}` })
            : "",
        ),
      ),
    ),
  );

  const cost = snapshot.console;
  const perSecond = cost.kafka_requests_per_second;
  byId("loop-cost").textContent = `${cost.pages_open} page(s) open; Kafka requests: ${perSecond === null ? "–" : perSecond.toFixed(1)}/s.`;
}

// The sink as this browser reaches it: the console's own host, the sink's port.
function linkInbox(inboxUrl) {
  const port = new URL(inboxUrl).port || "80";
  byId("inbox-link").href = `${window.location.protocol}//${window.location.hostname}:${port}/`;
}

function checkLive() {
  const silentFor = (Date.now() - lastReceivedAt) / 1000;
  const refresh = lastSnapshot ? lastSnapshot.console.refresh_seconds : 1;
  const stale = lastSnapshot !== null && silentFor > Math.max(MIN_STALE_SECONDS, 3 * refresh);
  document.body.classList.toggle("stale", stale);
  if (stale) {
    byId("kafka-status").textContent = "the console is not answering";
    byId("kafka-status").className = "pill bad";
    byId("data-age").textContent = `everything below is ${silentFor.toFixed(0)} s old, not live`;
  }
}

// The journey of one email: the API's GET /emails/{id}, passed through by the console. Every
// value is put in the page as text.
function reply(value) {
  if (!value) return "";
  return [value.code, value.enhanced, value.text].filter((part) => part !== null && part !== undefined && part !== "").join(" ");
}

function position(where, topic) {
  if (!where) return "";
  return `${where.topic || topic}-${where.partition}@${where.offset}`;
}

function renderJourney(email) {
  const eventsTopic = lastSnapshot ? lastSnapshot.events_consumer.topic : "email.events";
  byId("journey-message-id").textContent = email.id;
  const status = byId("journey-status");
  status.textContent = email.status;
  status.className = `pill ${{ delivered: "ok", failed: "bad", bounced: "bad", suppressed: "bad" }[email.status] || "warn"}`;
  byId("journey-summary").textContent = ` from ${email.from} · ${email.subject} · accepted ${timeOf(email.created_at)}`;
  byId("journey-recipients").replaceChildren(
    ...(email.recipients || []).map((recipient) =>
      el(
        "tr",
        { "data-testid": "journey-recipient", "data-state": recipient.state },
        el("td", { text: recipient.address }),
        el("td", { text: recipient.kind }),
        el("td", { "data-testid": "journey-recipient-state", text: recipient.state }),
        el("td", { text: reply(recipient.last_reply) }),
        el("td", { text: recipient.attempts === null || recipient.attempts === undefined ? "" : String(recipient.attempts) }),
        el("td", { text: recipient.next_try_at ? timeOf(recipient.next_try_at) : "" }),
      ),
    ),
  );
  byId("journey-history").replaceChildren(
    ...(email.history || []).map((entry) =>
      el(
        "tr",
        { "data-testid": "journey-event", "data-type": entry.type },
        el("td", { text: timeOf(entry.at) }),
        el("td", { text: entry.type }),
        el("td", { text: entry.recipient || "" }),
        el("td", { text: reply(entry.reply) }),
        el("td", { text: entry.attempt === null || entry.attempt === undefined ? "" : String(entry.attempt) }),
        el("td", { "data-testid": "journey-record", text: position(entry.record, "") }),
        el("td", { "data-testid": "journey-event-position", text: position(entry.event, eventsTopic) }),
      ),
    ),
  );
  byId("journey").hidden = false;
}

async function showJourney(event) {
  event.preventDefault();
  const id = byId("journey-id").value.trim();
  const error = byId("journey-error");
  error.textContent = "";
  if (!id) {
    error.textContent = "type a message id: the id the API's 202 answered";
    return;
  }
  let response;
  let answer;
  try {
    response = await fetch(`/api/emails/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } });
    answer = await response.json();
  } catch (failure) {
    byId("journey").hidden = true;
    error.textContent = `the console does not answer: ${failure}`;
    return;
  }
  if (!response.ok) {
    byId("journey").hidden = true;
    const detail = answer && typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer);
    error.textContent = `${response.status}: ${detail}`;
    return;
  }
  renderJourney(answer);
}

function connect() {
  const events = new EventSource("/api/events");
  events.onmessage = (message) => {
    lastSnapshot = JSON.parse(message.data);
    lastReceivedAt = Date.now();
    document.body.classList.remove("stale");
    render(lastSnapshot);
    linkInbox(lastSnapshot.console.inbox_url);
    document.body.dataset.snapshotAt = lastSnapshot.taken_at;
  };
  // EventSource reconnects by itself; checkLive says so meanwhile.
  setInterval(checkLive, 1000);
}

byId("journey-form").addEventListener("submit", showJourney);
connect();
