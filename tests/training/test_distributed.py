"""The process group under torchrun (rat.training.distributed): each attempt of a restarted job on a store
namespace of its own."""

import datetime

import torch.distributed as dist

from rat.training.distributed import attempt_store


def test_each_attempt_of_a_restarted_job_has_keys_of_its_own(monkeypatch):
    """torchrun's agent keeps one store for every attempt: what attempt 0 wrote (its ranks' addresses) must
    not be what attempt 1 reads."""
    timeout = datetime.timedelta(seconds=30)
    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout)  # the agent's store
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(agent.port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    assert attempt_store(timeout) is None                          # no agent store: env:// makes one
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    stores = []
    for attempt in ("0", "1"):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
        stores.append(attempt_store(timeout))
    stores[0].set("rank_1", "address of a rank that died")
    stores[1].set("rank_0", "address of a live rank")
    assert not stores[1].check(["rank_1"]) and not stores[0].check(["rank_0"])
    assert agent.get("rat/attempt_0/rank_1") == b"address of a rank that died"
    assert agent.get("rat/attempt_1/rank_0") == b"address of a live rank"
