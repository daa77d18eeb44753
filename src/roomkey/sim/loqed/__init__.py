"""A faithful simulator of LOQED bridges, locks, the Integrations API and app.loqed.com.

```python
sim = LoqedSimulator(clock=SimClock(manual=True))
sim.add_bridge("b1")
lock = sim.add_lock("b1", lock_id="Yq1gK4oeE9KWe0ByxjX2", numeric_id=6148, name="Room 1")
key = sim.add_key(lock.lock_id, local_id=1, name="roomkey")
async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app), base_url="http://b") as c:
    ...
```
"""

from roomkey.sim.loqed.config import CloudConfig, LockTimings, SimConfig, StatusLimit
from roomkey.sim.loqed.faults import FaultRule
from roomkey.sim.loqed.model import (
    NO_KEY,
    BoltState,
    DeliveryRecord,
    ReceivedCommand,
    SimApiToken,
    SimAppApiKey,
    SimBridge,
    SimCloudWebhook,
    SimKey,
    SimLock,
    SimWebhook,
    Verdict,
)
from roomkey.sim.loqed.seed import DEMO_LOCK_ID, DemoWorld, seed_demo
from roomkey.sim.loqed.server import LoqedServer
from roomkey.sim.loqed.simulator import LoqedSimulator, SimError

__all__ = [
    "DEMO_LOCK_ID",
    "NO_KEY",
    "BoltState",
    "CloudConfig",
    "DeliveryRecord",
    "DemoWorld",
    "FaultRule",
    "LockTimings",
    "LoqedServer",
    "LoqedSimulator",
    "ReceivedCommand",
    "SimApiToken",
    "SimAppApiKey",
    "SimBridge",
    "SimCloudWebhook",
    "SimConfig",
    "SimError",
    "SimKey",
    "SimLock",
    "SimWebhook",
    "StatusLimit",
    "Verdict",
    "seed_demo",
]
