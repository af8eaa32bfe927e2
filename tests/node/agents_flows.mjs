// More of the Agents SDK for JavaScript (`@openai/agents`) against the gateway: a handoff from a
// triage agent to a second agent that calls its own tool, the same streamed, an agent with a zod
// `outputType`, and two tool calls at once. Run by tests/test_node_clients.py, which queues the
// upstream's answers in the order of the steps below and checks what the upstream was sent.
//
// Usage: GATEWAY_URL=http://127.0.0.1:PORT/v1 MODEL=local-llama node agents_flows.mjs
// Prints one JSON line: {"passed": [step…], "failed": [{"step", "error"}…]}; exits 1 on a failure.

import assert from "node:assert/strict";
import { Agent, run, setDefaultOpenAIClient, setTracingDisabled, tool } from "@openai/agents";
import OpenAI from "openai";
import { z } from "zod";
import { finish, step } from "./report.mjs";

setTracingDisabled(true);
setDefaultOpenAIClient(
  new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node-agents", maxRetries: 0 }),
);
const model = process.env.MODEL;

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

const weather = new Agent({
  name: "weather",
  instructions: "You are the weather agent; call get_weather.",
  handoffDescription: "Answers questions about the weather.",
  model,
  tools: [getWeather],
});
const triage = new Agent({
  name: "triage",
  instructions: "Route the user to the right agent.",
  model,
  handoffs: [weather],
});

await step("handoff: triage transfers, the weather agent calls its tool and answers", async () => {
  calls.length = 0;
  const result = await run(triage, "Weather in Paris?");
  assert.equal(result.finalOutput, "Sunny in Paris.");
  assert.equal(result.lastAgent.name, "weather");
  assert.deepEqual(calls, ["Paris"]);
  const kinds = result.newItems.map((item) => item.type);
  assert.deepEqual(kinds, [
    "handoff_call_item",
    "handoff_output_item",
    "tool_call_item",
    "tool_call_output_item",
    "message_output_item",
  ]);
});

await step("handoff streamed: agent_updated events, then the final output", async () => {
  calls.length = 0;
  const streamed = await run(triage, "Weather in Rome?", { stream: true });
  const agents = [];
  for await (const event of streamed) {
    if (event.type === "agent_updated_stream_event") agents.push(event.agent.name);
  }
  await streamed.completed;
  assert.deepEqual(agents, ["weather"]);
  assert.equal(streamed.finalOutput, "Sunny in Rome.");
  assert.equal(streamed.lastAgent.name, "weather");
  assert.deepEqual(calls, ["Rome"]);
});

await step("outputType: a zod object as the final output, after a tool turn", async () => {
  calls.length = 0;
  const Forecast = z.object({ city: z.string(), temperature_c: z.number(), conditions: z.string() });
  const forecaster = new Agent({
    name: "forecaster",
    instructions: "Give the forecast.",
    model,
    tools: [getWeather],
    outputType: Forecast,
  });
  const result = await run(forecaster, "Forecast for Oslo?");
  assert.deepEqual(calls, ["Oslo"]);
  assert.deepEqual(result.finalOutput, { city: "Oslo", temperature_c: -3, conditions: "snow" });
});

await step("parallel tool calls: both run, both outputs go back", async () => {
  calls.length = 0;
  const result = await run(weather, "Paris and Berlin?");
  assert.deepEqual([...calls].sort(), ["Berlin", "Paris"]);
  assert.equal(result.finalOutput, "Sunny in both.");
  const kinds = result.newItems.map((item) => item.type);
  assert.deepEqual(kinds, [
    "tool_call_item",
    "tool_call_item",
    "tool_call_output_item",
    "tool_call_output_item",
    "message_output_item",
  ]);
});

await step("parallel tool calls, streamed: interleaved argument pieces, both run", async () => {
  calls.length = 0;
  const streamed = await run(weather, "Madrid and Lisbon?", { stream: true });
  const kinds = [];
  for await (const event of streamed) {
    if (event.type === "run_item_stream_event") kinds.push(event.item.type);
  }
  await streamed.completed;
  assert.deepEqual([...calls].sort(), ["Lisbon", "Madrid"]);
  assert.equal(streamed.finalOutput, "Sunny in both, streamed.");
  assert.equal(kinds.filter((kind) => kind === "tool_call_item").length, 2, kinds.join(","));
  assert.equal(kinds.filter((kind) => kind === "tool_call_output_item").length, 2);
});

finish();
