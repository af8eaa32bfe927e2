"""Every id the gateway mints, with OpenAI's prefixes (`resp_`, `msg_`, `fc_`, `rs_`, `call_`…).

A 12-hex-digit millisecond timestamp leads the random part so that ids of one kind sort roughly by
creation time, which keeps B-tree inserts at the right-hand edge of the index.
"""

from __future__ import annotations

import os
import time

# What OpenAI prefixes each output item type with.
ITEM_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
    "item_reference": "ref",
    "compaction": "cmp",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(18).hex()}"


def new_item_id(item_type: str) -> str:
    return new_id(ITEM_PREFIX.get(item_type, "item"))
