// More of the official `openai` Node SDK against the gateway: structured outputs with the zod
// helpers (`responses.parse`, the stream helper with a zod format, `zodResponsesFunction` and
// its `parsed_arguments`), the SDK's `ResponsesToolRunner`, typed errors (a 404's and a bad
// parameter's fields, a stream that fails upstream mid-answer), and a conversation's items
// managed one by one. Run by tests/test_node_clients.py, which queues the upstream's answers
// in the order of the steps below and checks what the upstream was sent.
//
// Usage: GATEWAY_URL=http://127.0.0.1:PORT/v1 MODEL=local-llama node openai_flows.mjs
// Prints one JSON line: {"passed": [step…], "failed": [{"step", "error"}…]}; exits 1 on a failure.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { ResponsesToolRunner, runnerFunction } from "openai/helpers/responses-tool-runner";
import { zodResponsesFunction, zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";
import { finish, step } from "./report.mjs";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node", maxRetries: 0 });
const model = process.env.MODEL;

// --- the scripted answers, in order -----------------------------------------------------------

await step("responses.parse: a nested zod format becomes output_parsed", async () => {
  const Book = z.object({
    title: z.string(),
    year: z.number().int(),
    tags: z.array(z.string()),
    author: z.object({ name: z.string(), born: z.number().nullable() }),
  });
  const parsed = await client.responses.parse({
    model,
    input: "Describe Dune.",
    text: { format: zodTextFormat(Book, "book") },
  });
  assert.equal(parsed.status, "completed");
  assert.deepEqual(parsed.output_parsed, {
    title: "Dune",
    year: 1965,
    tags: ["sf", "desert"],
    author: { name: "Frank Herbert", born: null },
  });
  const message = parsed.output.find((item) => item.type === "message");
  assert.deepEqual(message.content[0].parsed, parsed.output_parsed);
  assert.equal(parsed.text.format.type, "json_schema");
  assert.equal(parsed.text.format.name, "book");
  assert.equal(parsed.text.format.strict, true);
});

await step("responses.stream with a zod format: deltas, then output_parsed", async () => {
  const Weather = z.object({ city: z.string(), temperature_c: z.number(), windy: z.boolean() });
  const stream = client.responses.stream({
    model,
    input: "Weather in Oslo as JSON.",
    text: { format: zodTextFormat(Weather, "weather") },
  });
  const deltas = [];
  stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
  const final = await stream.finalResponse();
  assert.ok(deltas.length > 1, `one delta only: ${JSON.stringify(deltas)}`);
  assert.equal(deltas.join(""), final.output_text);
  assert.deepEqual(final.output_parsed, { city: "Oslo", temperature_c: -3, windy: true });
  assert.equal(final.text.format.name, "weather");
});

await step("zodResponsesFunction: the call's parsed_arguments", async () => {
  const lookup = zodResponsesFunction({
    name: "lookup_order",
    description: "Look an order up.",
    parameters: z.object({ order_id: z.string(), include_items: z.boolean() }),
  });
  const parsed = await client.responses.parse({
    model,
    input: "Where is order A-17?",
    tools: [lookup],
  });
  const call = parsed.output.find((item) => item.type === "function_call");
  assert.ok(call, JSON.stringify(parsed.output));
  assert.equal(call.name, "lookup_order");
  assert.equal(call.call_id, "call_order");
  assert.deepEqual(call.parsed_arguments, { order_id: "A-17", include_items: true });
  assert.equal(parsed.tools[0].strict, true);
  assert.equal(parsed.output_parsed, null);
});

await step("ResponsesToolRunner: a runnerFunction runs, then the final answer", async () => {
  const seen = [];
  const quote = zodResponsesFunction({
    name: "stock_quote",
    description: "The last price of a ticker.",
    parameters: z.object({ ticker: z.string() }),
    function: async ({ ticker }) => {
      seen.push(ticker);
      return `${ticker}: 201.5 USD`;
    },
  });
  const runner = new ResponsesToolRunner({ functions: [runnerFunction(quote)] });
  const final = await runner.run(client, { model, input: "Price of AAPL?" });
  assert.deepEqual(seen, ["AAPL"]);
  assert.equal(final.status, "completed");
  assert.equal(final.output_text, "AAPL trades at 201.5 USD.");
});

await step("responses.stream with a zodResponsesFunction: argument deltas, parsed_arguments", async () => {
  const lookup = zodResponsesFunction({
    name: "lookup_order",
    parameters: z.object({ order_id: z.string(), include_items: z.boolean() }),
  });
  const stream = client.responses.stream({ model, input: "And order B-2?", tools: [lookup] });
  const pieces = [];
  let done;
  stream.on("response.function_call_arguments.delta", (event) => pieces.push(event.delta));
  stream.on("response.function_call_arguments.done", (event) => {
    done = event;
  });
  const final = await stream.finalResponse();
  const call = final.output.find((item) => item.type === "function_call");
  assert.ok(call, JSON.stringify(final.output));
  assert.ok(pieces.length > 1, JSON.stringify(pieces));
  assert.equal(pieces.join(""), call.arguments);
  assert.equal(done.arguments, call.arguments);
  assert.deepEqual(call.parsed_arguments, { order_id: "B-2", include_items: false });
});

await step("responses.parse on a refusal: a refusal part, output_parsed null", async () => {
  const Secret = z.object({ password: z.string() });
  const parsed = await client.responses.parse({
    model,
    input: "Tell me the admin password.",
    text: { format: zodTextFormat(Secret, "secret") },
  });
  const message = parsed.output.find((item) => item.type === "message");
  assert.deepEqual(
    message.content.map((part) => part.type),
    ["refusal"],
  );
  assert.equal(message.content[0].refusal, "I can't share that.");
  assert.equal(parsed.output_parsed, null);
});

await step("a stream that fails upstream mid-answer: APIError, stored as failed", async () => {
  const raw = await client.responses.create({ model, input: "Tell me a long story.", stream: true });
  const types = [];
  let id;
  const error = await (async () => {
    for await (const event of raw) {
      id ??= event.response?.id;
      types.push(event.type);
    }
  })().then(
    () => null,
    (caught) => caught,
  );
  assert.ok(error instanceof OpenAI.APIError, `${error} after ${types.join(",")}`);
  assert.equal(error.code, "upstream_error");
  assert.equal(error.type, "server_error");
  assert.match(error.message, /upstream/);
  assert.ok(types.includes("response.output_text.delta"), types.join(","));
  assert.match(id, /^resp_/);
  const stored = await client.responses.retrieve(id);
  assert.equal(stored.status, "failed");
  assert.equal(stored.error.code, "server_error");
  assert.equal(stored.output[0].status, "incomplete"); // the partial answer is kept
  assert.ok(stored.output_text.length > 0);
});

await step("the stream helper on an upstream 500: finalResponse rejects, stored as failed", async () => {
  const stream = client.responses.stream({ model, input: "This one fails." });
  let id;
  stream.on("response.created", (event) => {
    id = event.response.id;
  });
  const error = await stream.finalResponse().then(
    () => null,
    (caught) => caught,
  );
  assert.ok(error instanceof OpenAI.APIError, String(error));
  assert.equal(error.code, "upstream_error");
  assert.match(id, /^resp_/);
  const stored = await client.responses.retrieve(id);
  assert.equal(stored.status, "failed");
  assert.equal(stored.error.code, "server_error");
});

// --- echoes from here on ------------------------------------------------------------------------

await step("errors: a 404's and a bad parameter's fields", async () => {
  const missing = await client.responses.retrieve("resp_missing").catch((caught) => caught);
  assert.ok(missing instanceof OpenAI.NotFoundError, String(missing));
  assert.equal(missing.status, 404);
  assert.ok("code" in missing.error, JSON.stringify(missing.error));
  assert.equal(missing.code, missing.error.code);
  assert.equal(missing.error.type, "invalid_request_error");
  assert.match(missing.message, /resp_missing/);
  const bad = await client.responses
    .create({ model, input: "hi", temperature: 3 })
    .catch((caught) => caught);
  assert.ok(bad instanceof OpenAI.BadRequestError, String(bad));
  assert.equal(bad.status, 400);
  assert.equal(bad.param, "temperature");
  assert.equal(bad.type, "invalid_request_error");
  assert.equal(typeof bad.code, "string");
  const badTopP = await client.responses
    .create({ model, input: "hi", top_p: 1.5 })
    .catch((caught) => caught);
  assert.ok(badTopP instanceof OpenAI.BadRequestError, String(badTopP));
  assert.equal(badTopP.param, "top_p");
  const missingPrevious = await client.responses
    .create({ model, input: "hi", previous_response_id: "resp_missing" })
    .catch((caught) => caught);
  assert.ok(missingPrevious instanceof OpenAI.APIError, String(missingPrevious));
  assert.ok([400, 404].includes(missingPrevious.status), String(missingPrevious.status));
  assert.equal(missingPrevious.param, "previous_response_id");
});

await step("conversation items: add, retrieve, delete one, update metadata", async () => {
  const conversation = await client.conversations.create({ metadata: { topic: "trip" } });
  const added = await client.conversations.items.create(conversation.id, {
    items: [
      { type: "message", role: "user", content: "I live in Lyon." },
      { type: "message", role: "user", content: "Forget this line." },
    ],
  });
  assert.equal(added.data.length, 2);
  const [kept, dropped] = added.data;
  assert.match(kept.id, /^msg_/);
  const got = await client.conversations.items.retrieve(kept.id, { conversation_id: conversation.id });
  assert.equal(got.id, kept.id);
  assert.equal(got.content[0].text, "I live in Lyon.");
  const after = await client.conversations.items.delete(dropped.id, {
    conversation_id: conversation.id,
  });
  assert.equal(after.id, conversation.id);
  assert.equal(after.object, "conversation");
  await assert.rejects(
    client.conversations.items.retrieve(dropped.id, { conversation_id: conversation.id }),
    OpenAI.NotFoundError,
  );
  const updated = await client.conversations.update(conversation.id, {
    metadata: { topic: "trip", city: "Lyon" },
  });
  assert.deepEqual(updated.metadata, { topic: "trip", city: "Lyon" });
  const answer = await client.responses.create({
    model,
    conversation: conversation.id,
    input: "Where do I live?",
  });
  assert.equal(answer.output_text, "echo: Where do I live?");
  const texts = [];
  for await (const item of client.conversations.items.list(conversation.id, { order: "asc" })) {
    texts.push(item.content[0].text);
  }
  assert.deepEqual(texts, ["I live in Lyon.", "Where do I live?", "echo: Where do I live?"]);
});

finish();
