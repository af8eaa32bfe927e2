// The `openai` Node SDK's stream readers on events the gateway relays from an upstream that
// speaks Responses natively (OpenAI): reasoning summaries, a hosted web search and the
// message, renumbered by the gateway. The SDK's `responses.stream()` helper rebuilds the
// response from the events and throws on one that does not fit what came before it. Run by
// tests/test_node_clients.py (the fake upstream answers with reasoning and a web search).
//
// Usage: GATEWAY_URL=http://127.0.0.1:PORT/v1 MODEL=gpt-5-mini node native_stream.mjs

import assert from "node:assert/strict";
import OpenAI from "openai";
import { finish, step } from "./report.mjs";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node", maxRetries: 0 });
const model = process.env.MODEL;
let first;
await step("the stream helper rebuilds a relayed response", async () => {
  const stream = client.responses.stream({
    model,
    input: "Weather in Paris?",
    reasoning: { effort: "low", summary: "auto" },
    tools: [{ type: "web_search" }],
  });
  const summary = [];
  stream.on("response.reasoning_summary_text.delta", (event) => summary.push(event.delta));
  const final = await stream.finalResponse();
  assert.deepEqual(
    final.output.map((item) => item.type),
    ["reasoning", "web_search_call", "message"],
  );
  assert.equal(summary.join(""), "Thinking it over.");
  assert.equal(final.output_text, "native: Weather in Paris?");
  assert.match(final.id, /^resp_/);
  first = final;
});

await step("raw events are numbered from 0 with output indexes in order", async () => {
  const raw = await client.responses.create({
    model,
    input: "And in Rome?",
    previous_response_id: first.id,
    reasoning: { effort: "low", summary: "auto" },
    tools: [{ type: "web_search" }],
    stream: true,
  });
  let sequence = -1;
  let index = -1;
  const types = new Set();
  for await (const event of raw) {
    assert.equal(event.sequence_number, sequence + 1);
    sequence = event.sequence_number;
    assert.equal(event.obfuscation, undefined); // the upstream's padding is not relayed
    if (event.type === "response.output_item.added") {
      assert.equal(event.output_index, index + 1);
      index = event.output_index;
    }
    types.add(event.type);
  }
  for (const kind of ["response.web_search_call.completed", "response.completed"]) {
    assert.ok(types.has(kind), kind);
  }
});

finish();
