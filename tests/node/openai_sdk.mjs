// The official `openai` Node SDK against the gateway: every call a Node service makes, checked
// with node:assert. Run by tests/test_node_clients.py, which starts the gateway and the fake
// upstream and queues the upstream's scripted answers in the order of the steps below (the
// first six; the rest are echoes: "echo: <last user text>").
//
// Usage: GATEWAY_URL=http://127.0.0.1:PORT/v1 MODEL=local-llama node openai_sdk.mjs
// Prints one JSON line: {"passed": [step…], "failed": [{"step", "error"}…]}; exits 1 on a failure.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { finish, step } from "./report.mjs";
import { ResponsesWS } from "openai/resources/responses/ws";
import { zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node", maxRetries: 0 });
const model = process.env.MODEL;
const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city.",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

// --- the scripted answers, in order -----------------------------------------------------------

await step("function call round trip", async () => {
  const first = await client.responses.create({ model, input: "Weather in Paris?", tools: [weather] });
  const call = first.output.find((item) => item.type === "function_call");
  assert.ok(call, JSON.stringify(first.output));
  assert.equal(call.name, "get_weather");
  assert.match(call.id, /^fc_/);
  assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });
  const second = await client.responses.create({
    model,
    previous_response_id: first.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny, 24 C" }],
    tools: [weather],
  });
  assert.equal(second.output_text, "It is sunny in Paris.");
  assert.equal(second.previous_response_id, first.id);
});

await step("responses.parse with a zod format", async () => {
  const Person = z.object({ name: z.string(), age: z.number() });
  const parsed = await client.responses.parse({
    model,
    input: "Who wrote the first program?",
    text: { format: zodTextFormat(Person, "person") },
  });
  assert.deepEqual(parsed.output_parsed, { name: "Ada", age: 36 });
  assert.equal(parsed.text.format.type, "json_schema");
  assert.equal(parsed.text.format.name, "person");
});

await step("compact, then continue from the compacted items", async () => {
  const compacted = await client.responses.compact({
    model,
    input: [
      { role: "user", content: "My name is Ada." },
      { role: "user", content: "I like dogs." },
    ],
  });
  assert.equal(compacted.object, "response.compaction");
  const last = compacted.output.at(-1);
  assert.equal(last.type, "compaction");
  assert.ok(last.encrypted_content);
  assert.ok(compacted.usage.total_tokens > 0);
  const next = await client.responses.create({
    model,
    input: [...compacted.output, { role: "user", content: "What do I like?" }],
  });
  assert.equal(next.output_text, "You like dogs.");
});

await step("cancel a background response mid-answer", async () => {
  const queued = await client.responses.create({ model, input: "Take your time.", background: true });
  let running = queued;
  for (let i = 0; i < 200 && running.status === "queued"; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    running = await client.responses.retrieve(queued.id);
  }
  const cancelled = await client.responses.cancel(queued.id);
  assert.equal(cancelled.id, queued.id);
  assert.equal(cancelled.status, "cancelled");
  assert.equal((await client.responses.retrieve(queued.id)).status, "cancelled");
  const again = await client.responses.cancel(queued.id); // idempotent, as at OpenAI
  assert.equal(again.status, "cancelled");
});

// --- echoes from here on ------------------------------------------------------------------------

let chained;
await step("create and chain with previous_response_id", async () => {
  const first = await client.responses.create({ model, input: "Hello from Node." });
  assert.match(first.id, /^resp_/);
  assert.equal(first.object, "response");
  assert.equal(first.status, "completed");
  assert.equal(first.output_text, "echo: Hello from Node.");
  assert.match(first.output[0].id, /^msg_/);
  assert.ok(first.usage.input_tokens > 0 && first.usage.total_tokens > 0);
  const second = await client.responses.create({
    model,
    input: "And again.",
    previous_response_id: first.id,
    metadata: { team: "node" },
  });
  assert.equal(second.output_text, "echo: And again.");
  assert.deepEqual(second.metadata, { team: "node" });
  chained = second;
});

await step("streams with the helper and with raw events", async () => {
  const stream = client.responses.stream({
    model,
    input: "Stream this reply please.",
    previous_response_id: chained.id,
  });
  const deltas = [];
  stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
  const final = await stream.finalResponse();
  assert.equal(final.status, "completed");
  assert.equal(final.output_text, "echo: Stream this reply please.");
  assert.equal(deltas.join(""), final.output_text);

  const raw = await client.responses.create({ model, input: "Raw events.", stream: true });
  const types = [];
  let sequence = -1;
  for await (const event of raw) {
    assert.equal(event.sequence_number, sequence + 1, JSON.stringify(event));
    sequence = event.sequence_number;
    types.push(event.type);
  }
  assert.deepEqual(types.slice(0, 4), [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
  ]);
  assert.deepEqual(types.slice(-4), [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
  ]);
});

await step("retrieve, input items with auto-pagination, delete", async () => {
  const created = await client.responses.create({
    model,
    input: [
      { role: "user", content: "one" },
      { role: "user", content: "two" },
      { role: "user", content: "three" },
    ],
  });
  const got = await client.responses.retrieve(created.id);
  assert.equal(got.id, created.id);
  assert.equal(got.output_text, "echo: three");
  const paged = [];
  for await (const item of client.responses.inputItems.list(created.id, { limit: 1 })) {
    paged.push(item);
  }
  assert.equal(paged.length, 3);
  assert.deepEqual(
    paged.map((item) => item.content[0].text),
    ["three", "two", "one"], // newest first, OpenAI's default order
  );
  const ascending = await client.responses.inputItems.list(created.id, { order: "asc" });
  assert.deepEqual(
    ascending.data.map((item) => item.content[0].text),
    ["one", "two", "three"],
  );
  assert.equal(ascending.has_more, false);
  const deleted = await client.responses.delete(created.id);
  assert.deepEqual(deleted, { id: created.id, object: "response", deleted: true });
  await assert.rejects(client.responses.retrieve(created.id), OpenAI.NotFoundError);
});

await step("errors are typed, with OpenAI's four fields", async () => {
  const missing = await client.responses.retrieve("resp_does_not_exist").catch((error) => error);
  assert.ok(missing instanceof OpenAI.NotFoundError, String(missing));
  assert.equal(missing.status, 404);
  assert.deepEqual(Object.keys(missing.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(missing.type, "invalid_request_error");
  const bad = await client.responses
    .create({ model, input: "hi", temperature: 5 })
    .catch((error) => error);
  assert.ok(bad instanceof OpenAI.BadRequestError, String(bad));
  assert.equal(bad.param, "temperature");
  const unknown = await client.responses
    .create({ model: "no-such-model", input: "hi" })
    .catch((error) => error);
  assert.ok(unknown instanceof OpenAI.APIError, String(unknown));
  assert.ok([400, 404].includes(unknown.status), String(unknown.status));
  assert.equal(unknown.param, "model");
  assert.ok(missing.requestID === null || typeof missing.requestID === "string");
});

await step("background: poll, then resume its stream from a cursor", async () => {
  const queued = await client.responses.create({ model, input: "Work in the background.", background: true });
  assert.ok(["queued", "in_progress", "completed"].includes(queued.status), queued.status);
  let done = queued;
  for (let i = 0; i < 200 && !["completed", "failed", "cancelled"].includes(done.status); i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    done = await client.responses.retrieve(queued.id);
  }
  assert.equal(done.status, "completed");
  assert.equal(done.output_text, "echo: Work in the background.");

  const streamed = await client.responses.create({
    model,
    input: "Stream in the background.",
    background: true,
    stream: true,
  });
  let cursor = -1;
  let id;
  for await (const event of streamed) {
    id ??= event.response?.id;
    cursor = event.sequence_number;
    if (event.type === "response.output_item.added") break; // a dropped connection
  }
  assert.match(id, /^resp_/);
  const resumed = await client.responses.retrieve(id, { stream: true, starting_after: cursor });
  const rest = [];
  for await (const event of resumed) rest.push(event);
  assert.equal(rest[0].sequence_number, cursor + 1);
  assert.equal(rest.at(-1).type, "response.completed");
  assert.equal(rest.at(-1).response.output_text ?? rest.at(-1).response.output[0].content[0].text,
    "echo: Stream in the background.");
});

await step("conversations: create, answer in it, list its items", async () => {
  const conversation = await client.conversations.create({
    metadata: { topic: "node" },
    items: [{ type: "message", role: "user", content: "Hi, I am Ada." }],
  });
  assert.match(conversation.id, /^conv_/);
  const answer = await client.responses.create({
    model,
    conversation: conversation.id,
    input: "Remember me?",
  });
  assert.equal(answer.output_text, "echo: Remember me?");
  assert.equal(answer.conversation.id, conversation.id);
  const items = [];
  for await (const item of client.conversations.items.list(conversation.id, { order: "asc", limit: 2 })) {
    items.push(item);
  }
  assert.deepEqual(
    items.map((item) => [item.type, item.role]),
    [
      ["message", "user"],
      ["message", "user"],
      ["message", "assistant"],
    ],
  );
  const fetched = await client.conversations.retrieve(conversation.id);
  assert.deepEqual(fetched.metadata, { topic: "node" });
  const deleted = await client.conversations.delete(conversation.id);
  assert.equal(deleted.deleted, true);
});

await step("input token count and the models list", async () => {
  const counted = await client.responses.inputTokens.count({ model, input: "Count these tokens." });
  assert.equal(counted.object, "response.input_tokens");
  assert.ok(counted.input_tokens > 0);
  const models = [];
  for await (const entry of client.models.list()) models.push(entry.id);
  assert.ok(models.includes(model), models.join(","));
});

await step("WebSocket mode: two unstored turns on one connection", async () => {
  const socket = new ResponsesWS(client);
  const messages = socket.stream();
  async function turn(body) {
    socket.send({ type: "response.create", model, store: false, ...body });
    const types = [];
    for (;;) {
      const { value, done } = await messages.next();
      assert.ok(!done, "the socket closed mid-turn");
      if (value.type === "error") throw value.error;
      if (value.type !== "message") continue;
      types.push(value.message.type);
      if (value.message.type === "error") throw new Error(JSON.stringify(value.message));
      if (value.message.type === "response.completed") return [value.message.response, types];
    }
  }
  const [first, types] = await turn({ input: "First over a socket." });
  assert.equal(first.output_text ?? first.output[0].content[0].text, "echo: First over a socket.");
  assert.equal(first.store, false);
  assert.equal(types[0], "response.created");
  // Continued from the connection's memory: it was never stored.
  const [second] = await turn({ input: "Second over it.", previous_response_id: first.id });
  assert.equal(second.output[0].content[0].text, "echo: Second over it.");
  socket.close({ code: 1000, reason: "done" });
  await assert.rejects(client.responses.retrieve(first.id), OpenAI.NotFoundError);
});

finish();
