"""Data-loss prevention: NeuVector-shaped regex sensors compiled with hyperscan, scanned across TCP segments.

model.py (sensor definitions), builtin.py (credit cards, US SSN), validators.py (Luhn, SSN
ranges, masking), compile.py (hyperscan and its database cache), scanner.py (streams and HTTP
messages), engine.py (`DlpEngine`, policy settings), inspector.py (pipeline inspector),
loader.py (sensor YAML), reference.py (the same sensors with Python `re`). See docs/dlp.md.
"""

from podwall.inspect.dlp.builtin import BUILTIN_NAMES, builtin_sensor, builtin_sensors
from podwall.inspect.dlp.engine import DlpEngine, action_for, engine_for_config, sensor_catalog
from podwall.inspect.dlp.inspector import DlpInspector
from podwall.inspect.dlp.loader import load_sensors, parse_sensors
from podwall.inspect.dlp.model import Sensor, SensorPattern, SensorRule
from podwall.inspect.dlp.scanner import DlpStream

__all__ = [
    "BUILTIN_NAMES",
    "DlpEngine",
    "DlpInspector",
    "DlpStream",
    "Sensor",
    "SensorPattern",
    "SensorRule",
    "action_for",
    "builtin_sensor",
    "builtin_sensors",
    "engine_for_config",
    "load_sensors",
    "parse_sensors",
    "sensor_catalog",
]
