// The AsyncAPI document of notifications/asyncapi.py, checked by the official parser (@asyncapi/parser):
// any diagnostic of error severity fails, and so CI fails when the document is invalid. The document is
// generated as a project generates it, with `manage.py drf_live_asyncapi`, from the .venv `make test` made.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import asyncapi from "@asyncapi/parser";

const { Parser, DiagnosticSeverity } = asyncapi;
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const PYTHON = `${ROOT}.venv/bin/python`;
// Without the .venv (node --test alone, before `make install`) there is nothing to check, except in CI.
const skip = !existsSync(PYTHON) && !process.env.CI && "no .venv: run `make install` (or `make test`) first";

function python(args, env = {}) {
  // stderr (drf-spectacular's warnings: the hashid fields it maps to "string") shows only in a failure.
  const options = { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } };
  return execFileSync(PYTHON, args, options);
}

async function errorsOf(text) {
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics
    .filter((diagnostic) => diagnostic.severity === DiagnosticSeverity.Error)
    .map((diagnostic) => `${diagnostic.code} at ${diagnostic.path.join(".")}: ${diagnostic.message}`);
  return { document, errors };
}

async function parse(text) {
  const { document, errors } = await errorsOf(text);
  assert.deepEqual(errors, [], "the official parser finds the document invalid");
  assert.ok(document, "the parser returned no document");
  return document;
}

test("the example project's AsyncAPI document is valid AsyncAPI 3.0", { skip }, async () => {
  const document = await parse(python(["manage.py", "drf_live_asyncapi"]));

  assert.equal(document.version(), "3.0.0");
  const channel = document.channels().get("notifications");
  assert.equal(channel.address(), "/ws/notifications/");
  const operations = document.operations().all().map((operation) => operation.id());
  for (const action of ["subscribe", "unsubscribe", "retrieve", "list", "authenticate", "ping"]) {
    assert.ok(operations.includes(action), `no operation ${action}`);
    assert.ok(document.operations().get(action).isReceive());
  }
  for (const event of ["UPDATE_TASK", "CREATE_TASK", "DELETE_TASK", "UPDATE_PROJECT", "UPDATE_USER"]) {
    const [operation] = operations.filter((id) => id.endsWith(`.${event}`));
    assert.ok(operation, `no operation sends ${event}`);
    assert.ok(document.operations().get(operation).isSend());
  }
  const names = new Set(channel.messages().all().map((message) => message.name()));
  for (const name of ["SUBSCRIBED", "UNSUBSCRIBED", "RETRIEVED", "LISTED", "AUTHENTICATED", "PONG", "ERROR"]) {
    assert.ok(names.has(name), `no message ${name}`);
  }
  // The parser resolved the serializers' schemas: an update's payload is a task with its fields.
  const update = channel.messages().all().find((message) => message.name() === "UPDATE_TASK");
  const task = update.payload().properties().payload;
  assert.deepEqual(Object.keys(task.properties()).sort(), ["assignee", "done", "id", "private", "project", "title"]);
  const code = channel.messages().all().find((message) => message.name() === "ERROR").payload().properties().payload;
  assert.ok(code.properties().code.enum().includes("not_found"));
});

test("the YAML form of the document is valid too", { skip }, async () => {
  const args = ["manage.py", "drf_live_asyncapi", "--format", "yaml", "--server", "ws://127.0.0.1:8000"];
  const document = await parse(python(args));

  assert.equal(document.servers().get("drf-live").host(), "127.0.0.1:8000");
});

test("a registry with writes, custom actions, renamed events and no collections documents validly", { skip }, async () => {
  const document = await parse(python(["-m", "tests.asyncapi_variants"]));

  const operations = document.operations().all().map((operation) => operation.id());
  for (const id of ["create", "update", "partial_update", "destroy", "assign", "api.task.TASK_CHANGED"]) {
    assert.ok(operations.includes(id), `no operation ${id}`);
  }
  assert.ok(!operations.includes("api.project.CREATE_PROJECT"), "a registration without collections has no CREATE");
});

test("an invalid document fails the check", { skip }, async () => {
  // info.version must be a string: the example project takes DRF_LIVE overrides from the environment.
  const text = python(["manage.py", "drf_live_asyncapi"], { DRF_LIVE: JSON.stringify({ ASYNCAPI_INFO: { version: 5 } }) });

  const { errors } = await errorsOf(text);

  assert.ok(errors.some((error) => error.includes("info.version")), errors.join("\n"));
});
