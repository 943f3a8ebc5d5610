# Vacsine: Ansible callback plugin that writes one JSON object per line for each event of a
# playbook (task start, per-host start, result, loop item, retry, stats) with wall-clock times,
# to the file named by VACSINE_ANSIBLE_EVENTS. Shipped inside the vacsine binary
# (src/executor/ansible.rs embeds it with include_str!) and written to a private temporary
# directory for each `ansible` step, next to the connection plugin.
#
# It is a notification callback: the playbook's own output (the stdout callback) is untouched
# and stays separate from these events. Diffs are summarised (headers and line counts), never
# copied: file contents do not reach the events file.
from __future__ import annotations

DOCUMENTATION = """
    name: vacsine_events
    type: notification
    short_description: JSON-lines events with wall-clock times for Vacsine
    description:
        - Writes one JSON object per line for each task start, per-host start, result, loop item
          and retry, with wall-clock times, to the file named by VACSINE_ANSIBLE_EVENTS.
    author: Vacsine
    requirements:
        - enable in configuration (callbacks_enabled)
"""

import difflib
import json
import os
import time

from ansible.plugins.callback import CallbackBase

# Format of the events; the executor ignores fields it does not know.
VERSION = 1


def _result(r):
    # `result` since ansible-core 2.19; `_result` before.
    data = getattr(r, "result", None)
    if data is None:
        data = r._result
    return data


def _task(r):
    return getattr(r, "task", None) or r._task


def _host(r):
    return getattr(r, "host", None) or r._host


def _lines(v):
    if v is None:
        return []
    if isinstance(v, (dict, list)):
        v = json.dumps(v, indent=2, sort_keys=True, default=str)
    return str(v).splitlines()


def _diff_summary(diff):
    """Headers and +/- line counts of a result's diff (a dict or a list of them)."""
    entries = diff if isinstance(diff, list) else [diff]
    out = []
    for d in entries:
        if not isinstance(d, dict):
            continue
        header = d.get("after_header") or d.get("before_header") or ""
        added = removed = 0
        if "before" in d or "after" in d:
            for line in difflib.unified_diff(_lines(d.get("before")), _lines(d.get("after")), lineterm="", n=0):
                if line.startswith("+") and not line.startswith("+++"):
                    added += 1
                elif line.startswith("-") and not line.startswith("---"):
                    removed += 1
        elif "prepared" in d:
            for line in str(d["prepared"]).splitlines():
                if line.startswith("+") and not line.startswith("+++"):
                    added += 1
                elif line.startswith("-") and not line.startswith("---"):
                    removed += 1
        else:
            continue
        if added or removed or header:
            out.append({"header": str(header), "added": added, "removed": removed})
    return out


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "vacsine_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._file = None
        path = os.environ.get("VACSINE_ANSIBLE_EVENTS")
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")

    def _out(self, doc):
        if self._file is None:
            return
        doc["v"] = VERSION
        self._file.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
        self._file.flush()

    def _task_doc(self, event, task):
        return {
            "event": event,
            "at": time.time(),
            "task": task.get_name(),
            "uuid": task._uuid,
        }

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._out(self._task_doc("task_start", task))

    def v2_playbook_on_handler_task_start(self, task):
        doc = self._task_doc("task_start", task)
        doc["handler"] = True
        self._out(doc)

    def v2_runner_on_start(self, host, task):
        doc = self._task_doc("host_start", task)
        doc["host"] = host.get_name()
        self._out(doc)

    def _emit(self, event, status, result):
        r = _result(result)
        doc = self._task_doc(event, _task(result))
        doc["host"] = _host(result).get_name()
        doc["status"] = status
        doc["changed"] = bool(r.get("changed", False))
        for key in ("msg", "rc", "skip_reason", "false_condition"):
            if r.get(key) is not None:
                doc[key] = r.get(key)
        if r.get("censored"):
            doc["msg"] = r.get("censored")
        if event == "item":
            doc["item"] = self._get_item_label(r)
        if r.get("diff"):
            summary = _diff_summary(r["diff"])
            if summary:
                doc["diff"] = summary
        self._out(doc)

    def v2_runner_on_ok(self, result):
        self._emit("result", "changed" if _result(result).get("changed") else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit("result", "ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result):
        self._emit("result", "skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._emit("result", "unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self._emit("item", "changed" if _result(result).get("changed") else "ok", result)

    def v2_runner_item_on_failed(self, result):
        self._emit("item", "failed", result)

    def v2_runner_item_on_skipped(self, result):
        self._emit("item", "skipped", result)

    def v2_runner_retry(self, result):
        r = _result(result)
        doc = self._task_doc("retry", _task(result))
        doc["host"] = _host(result).get_name()
        doc["attempt"] = r.get("attempts")
        doc["retries"] = r.get("retries")
        self._out(doc)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._out({"event": "stats", "at": time.time(), "stats": {h: stats.summarize(h) for h in hosts}})
