// The Agents SDK for JavaScript (`@openai/agents`) against the gateway, on its Responses model
// (the default): a tool-calling agent run to its final output, the same streamed, and a run
// continued from the last one with `previousResponseId` (the gateway's stored chain). Run by
// tests/test_node_clients.py, which queues the upstream's answers in this order.
//
// Usage: GATEWAY_URL=http://127.0.0.1:PORT/v1 MODEL=local-agent node agents_sdk.mjs
// Prints one JSON line: {"passed": [step…], "failed": [{"step", "error"}…]}; exits 1 on a failure.

import assert from "node:assert/strict";
import { Agent, run, setDefaultOpenAIClient, setTracingDisabled, tool } from "@openai/agents";
import OpenAI from "openai";
import { finish, step } from "./report.mjs";
import { z } from "zod";

setTracingDisabled(true);
setDefaultOpenAIClient(
  new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node-agents", maxRetries: 0 }),
);

const calls = [];
const getWeather = tool({
  name: "get_weather",
  description: "The weather in a city.",
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => {
    calls.push(city);
    return `sunny in ${city}`;
  },
});

const agent = new Agent({
  name: "Weather",
  instructions: "Answer with the weather; call get_weather first.",
  model: process.env.MODEL,
  tools: [getWeather],
});

let last;
await step("run: a tool call, then the final output", async () => {
  const result = await run(agent, "Weather in Paris?");
  assert.deepEqual(calls, ["Paris"]);
  assert.equal(result.finalOutput, "It is sunny in Paris.");
  assert.match(result.lastResponseId, /^resp_/);
  const kinds = result.newItems.map((item) => item.type);
  assert.deepEqual(kinds, ["tool_call_item", "tool_call_output_item", "message_output_item"]);
  last = result;
});

await step("run streamed: events, then the final output", async () => {
  const streamed = await run(agent, "Weather in Rome?", { stream: true });
  const text = [];
  const kinds = new Set();
  for await (const event of streamed) {
    kinds.add(event.type);
    if (event.type === "raw_model_stream_event" && event.data.type === "output_text_delta") {
      text.push(event.data.delta);
    }
  }
  await streamed.completed;
  assert.deepEqual(calls, ["Paris", "Rome"]);
  assert.equal(streamed.finalOutput, "It is sunny in Rome.");
  assert.equal(text.join(""), "It is sunny in Rome.");
  assert.ok(kinds.has("run_item_stream_event") && kinds.has("raw_model_stream_event"));
});

await step("a run continued with previousResponseId", async () => {
  const result = await run(agent, "And tomorrow?", { previousResponseId: last.lastResponseId });
  assert.equal(result.finalOutput, "Rain tomorrow.");
});

finish();
