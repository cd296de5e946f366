// The step harness shared by the Node scenarios (scenario.mjs, crypto.mjs).
//
// Every step prints exactly one JSON line on stdout:
//   {"step": "<name>", "ok": true|false, "ms": <elapsed>, ...details, "error": "<why>"}
// A failed step does not stop the following ones unless they depend on it (then they report
// "skipped": "<dependency>"). Each step has its own timeout and a watchdog ends the whole run,
// so the caller always gets an answer instead of a hang. Everything the SDK logs goes to
// stderr, so stdout carries only the result lines.

import { logger } from "matrix-js-sdk/lib/logger.js";

// Keep stdout for result lines only.
for (const name of ["log", "info", "debug", "trace", "warn"]) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}
logger.setLevel(process.env.SDK_LOG_LEVEL ?? "warn");

export function emit(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function describe(err) {
  if (err && typeof err === "object" && "httpStatus" in err) {
    return `HTTP ${err.httpStatus} ${err.errcode ?? ""} ${err.message ?? ""} ${JSON.stringify(err.data ?? {})}`;
  }
  return String(err?.stack ?? err);
}

// A run of steps: `step(name, fn, {needs})` runs `fn` (which returns the details to report,
// or throws) under the step timeout; `finish(extra)` stops the watchdog and prints "done".
export function stepRunner({ label, stepTimeoutMs, totalTimeoutMs }) {
  const failed = new Set();
  const watchdog = setTimeout(() => {
    emit({ step: "watchdog", ok: false, error: `${label} exceeded ${totalTimeoutMs} ms` });
    process.exit(3);
  }, totalTimeoutMs);

  async function step(name, fn, { needs = [] } = {}) {
    const missing = needs.filter((n) => failed.has(n));
    if (missing.length) {
      failed.add(name);
      emit({ step: name, ok: false, skipped: missing.join(",") });
      return undefined;
    }
    const started = Date.now();
    try {
      const details = (await withTimeout(Promise.resolve().then(fn), stepTimeoutMs, name)) ?? {};
      emit({ step: name, ok: true, ms: Date.now() - started, ...details });
      return details;
    } catch (err) {
      failed.add(name);
      emit({ step: name, ok: false, ms: Date.now() - started, error: describe(err) });
      return undefined;
    }
  }

  function finish(extra = {}) {
    clearTimeout(watchdog);
    emit({ step: "done", ok: failed.size === 0, ...extra });
  }

  return { step, finish, failed };
}

// Resolve with the first truthy value of `predicate()` (async allowed), re-checked on
// every `event` of `emitter`. Checks run one at a time.
export function until(emitter, event, predicate) {
  return new Promise((resolve, reject) => {
    let running = false;
    let again = false;
    const check = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          const value = await predicate();
          if (value) {
            emitter.off(event, check);
            resolve(value);
            return;
          }
        } while (again);
      } catch (err) {
        emitter.off(event, check);
        reject(err);
      } finally {
        running = false;
      }
    };
    emitter.on(event, check);
    check();
  });
}
