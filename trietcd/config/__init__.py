"""trietcd's configuration: etcd 3.5.1's flags, ETCD_* environment and YAML config file -> Config."""

from trietcd.config.model import Config, ConfigError, LogLine, TLSInfo, render_line
from trietcd.config.parse import parse

__all__ = ["Config", "ConfigError", "LogLine", "TLSInfo", "parse", "render_line"]
