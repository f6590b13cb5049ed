"""Built-in network threat detection (NeuVector's list): the catalog, its settings and the engine.

`ThreatEngine(settings)` is what the datapath drives (see engine.py for the hooks);
`ThreatSettings` / `load_threat_settings` configure each threat; `CATALOG` names them all.
"""

from podwall.inspect.threats.catalog import (
    CATALOG,
    THREATS,
    ThreatInfo,
    ThreatSetting,
    ThreatSettings,
    load_threat_settings,
    threat_info,
)
from podwall.inspect.threats.engine import ThreatEngine

__all__ = [
    "CATALOG",
    "THREATS",
    "ThreatEngine",
    "ThreatInfo",
    "ThreatSetting",
    "ThreatSettings",
    "load_threat_settings",
    "threat_info",
]
