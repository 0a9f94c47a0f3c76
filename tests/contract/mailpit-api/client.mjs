// The mailpit-api client (npm), pointed at the sink as at a Mailpit: `node client.mjs <base URL>`.
// Prints one JSON object of what each call answered, for tests/contract/test_mailpit_api_client.py.
// The sink holds three mails from the test, the newest "Weekly digest"; every call must succeed.
import { MailpitClient } from "mailpit-api";

const baseURL = process.argv[2];
if (!baseURL) {
  console.error("usage: node client.mjs <base URL of the sink's HTTP API>");
  process.exit(2);
}
const mailpit = new MailpitClient(baseURL);
const subjects = (summary) => summary.messages.map((message) => message.Subject);

const info = await mailpit.getInfo();
const listed = await mailpit.listMessages();
const page = await mailpit.listMessages(1, 1);
const found = await mailpit.searchMessages({ query: "from:carol@example.com" });
const waited = await mailpit.waitForMessage({ query: "subject:shipped" }, { timeout: 2000 });
const counted = await mailpit.waitForMessages({ count: 3 }, { timeout: 2000 });
const latest = await mailpit.getMessageSummary();
const headers = await mailpit.getMessageHeaders(latest.ID);
const raw = await mailpit.getMessageSource();

const chaosBefore = await mailpit.getChaosTriggers();
const chaosSet = await mailpit.setChaosTriggers({ Recipient: { ErrorCode: 451, Probability: 50 } });
const chaosReset = await mailpit.setChaosTriggers();

const oldest = listed.messages[listed.messages.length - 1];
const deletedById = await mailpit.deleteMessages({ IDs: [oldest.ID] });
const afterDeleteById = await mailpit.listMessages();
const deletedBySearch = await mailpit.deleteMessagesBySearch({ query: "subject:invoice" });
const afterDeleteBySearch = await mailpit.listMessages();
const deletedAll = await mailpit.deleteMessages();
const afterDeleteAll = await mailpit.listMessages();

console.log(
  JSON.stringify({
    info: { Version: info.Version, Messages: info.Messages, Unread: info.Unread },
    list: { total: listed.total, subjects: subjects(listed) },
    page: { start: page.start, subjects: subjects(page) },
    search: { messages_count: found.messages_count, subjects: subjects(found) },
    waitForMessage: waited.Subject,
    waitForMessages: counted.messages_count,
    latest: { ID: latest.ID, Subject: latest.Subject, MessageID: latest.MessageID, Text: latest.Text },
    headers: { Subject: headers.Subject },
    raw,
    chaos: { before: chaosBefore, set: chaosSet, reset: chaosReset },
    deleted: {
      byId: [deletedById, subjects(afterDeleteById)],
      bySearch: [deletedBySearch, subjects(afterDeleteBySearch)],
      all: [deletedAll, afterDeleteAll.total],
    },
  }),
);
