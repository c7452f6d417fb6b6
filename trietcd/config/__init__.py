"""trietcd's configuration: etcd 3.5.1's flags, ETCD_* environment and YAML config file -> Config."""

from trietcd.config.model import Config, ConfigError, LogLine, TLSInfo, render_line
from trietcd.config.host import detect_default_host
from trietcd.config.parse import parse

__all__ = ["Config", "ConfigError", "LogLine", "TLSInfo", "detect_default_host", "parse", "render_line"]
