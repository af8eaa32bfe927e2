// What every script here reports: the steps that passed and those that failed (with the
// error), as one JSON line on stdout, and an exit status of 1 if any failed.

const passed = [];
const failed = [];

export async function step(name, body) {
  try {
    await body();
    passed.push(name);
  } catch (error) {
    failed.push({ step: name, error: String(error?.stack ?? error).slice(0, 2000) });
  }
}

export function finish() {
  console.log(JSON.stringify({ passed, failed }));
  process.exit(failed.length ? 1 : 0);
}
