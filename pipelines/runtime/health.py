"""Agent crashes, as /health reports them.

In faust-streaming an agent runs as actors under a mode supervisor. When an actor raises,
Faust marks it crashed (`Service.crash`, which logs the traceback) and the agent's
supervisor restarts it: the process stays up, the web page keeps answering, and the
record the actor crashed on is never processed, so its partition cannot commit past it.
A crash-looping agent therefore looked healthy. `CrashRecordingSupervisor` is the agents'
supervisor (Faust's `agent_supervisor` setting): it records each crash before it
restarts the actor, and `/health` answers 503 naming the agent and its error from the
first crash until the worker is restarted (which resumes from the last commit).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import mode


@dataclass
class AgentCrash:
    """The crashes of one agent in this process: how many, the last error, when."""

    agent: str
    error: str
    count: int
    last_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "error": self.error,
            "crashes": self.count,
            "last_crash_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_at)),
        }


class AgentCrashes:
    """Every agent crash of one app since the worker started."""

    def __init__(self) -> None:
        self._by_agent: dict[str, AgentCrash] = {}

    def record(self, agent: str, reason: BaseException) -> None:
        error = describe(reason)
        crash = self._by_agent.get(agent)
        if crash is None:
            self._by_agent[agent] = AgentCrash(agent, error, 1, time.time())
        else:
            crash.error, crash.count, crash.last_at = error, crash.count + 1, time.time()

    def all(self) -> list[AgentCrash]:
        return sorted(self._by_agent.values(), key=lambda c: c.agent)


def describe(reason: BaseException) -> str:
    """`Type: first line of the message`, short enough for a health page."""
    lines = str(reason).strip().splitlines()
    text = f"{type(reason).__name__}: {lines[0]}" if lines else type(reason).__name__
    return text[:500]


def health_body(crashes: AgentCrashes, base: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The /health document and its HTTP status: 503 once any agent has crashed."""
    crashed = crashes.all()
    if not crashed:
        return {"status": "ok", **base, "crashed_agents": []}, 200
    first = crashed[0]
    body = {
        "status": "unhealthy",
        **base,
        "error": f"agent {first.agent} crashed: {first.error}",
        "crashed_agents": [crash.as_json() for crash in crashed],
    }
    return body, 503


class CrashRecordingSupervisor(mode.OneForOneSupervisor):
    """Faust's default agent supervisor (restart the crashed actor), recording the crash
    in the app's `crashes` first. A restart on rebalance (CancelledError) is no crash."""

    async def restart_service(self, service: Any) -> None:
        reason = service.crash_reason
        agent = getattr(service, "agent", None)
        crashes = getattr(getattr(agent, "app", None), "crashes", None)
        if (
            isinstance(crashes, AgentCrashes)
            and reason is not None
            and not isinstance(reason, asyncio.CancelledError)
        ):
            crashes.record(str(agent.name), reason)  # type: ignore[union-attr]
        await super().restart_service(service)
