"""`trietcdutl`: etcdutl 3.5.1's commands, flags, outputs, errors and exit codes.

    trietcdutl snapshot status <file> [-w simple|json|table|fields]
    trietcdutl snapshot restore <file> --data-dir DIR [--name ..] [--initial-cluster ..] [--wal-dir ..] ...
    trietcdutl defrag --data-dir DIR
    trietcdutl backup --data-dir DIR --backup-dir DIR [--wal-dir ..] [--backup-wal-dir ..] [--with-v3]
    trietcdutl version

Command lines are read the way etcdutl's cobra reads them: flags anywhere, `--flag value` or `--flag=value`,
`-w` for `--write-out`; a missing required flag or an unknown one prints the error, the command's usage and
the error again, exit 1.
"""

from __future__ import annotations

import json
import os
import sys

import attrs

import trietcd

from . import console

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_BAD_FEATURE = 4
EXIT_BAD_ARGS = 128

WRITE_OUT_USAGE = "set the output format (fields, json, protobuf, simple, table)"


@attrs.frozen
class Flag:
    name: str
    kind: type  # str or bool
    usage: str
    default: object = ""
    short: str = ""


@attrs.frozen
class Command:
    path: str  # "snapshot restore"
    use: str  # what the usage line shows after "etcdutl "
    short: str
    flags: tuple[Flag, ...] = ()
    required: tuple[str, ...] = ()
    subcommands: tuple[str, ...] = ()
    hidden: bool = False


GLOBAL_FLAGS = (Flag("write-out", str, WRITE_OUT_USAGE, "simple", "w"),)

COMMANDS = {c.path: c for c in (
    Command("", "etcdutl", "", subcommands=("backup", "defrag", "help", "snapshot", "version")),
    Command("backup", "backup", "[legacy] offline backup of etcd directory", flags=(
        Flag("backup-dir", str, "Path to the backup dir"),
        Flag("backup-wal-dir", str, "Path to the backup wal dir"),
        Flag("data-dir", str, "Path to the etcd data dir"),
        Flag("wal-dir", str, "Path to the etcd wal dir"),
        Flag("with-v3", bool, "Backup v3 backend data", True),
    ), required=("data-dir", "backup-dir")),
    Command("defrag", "defrag", "Defragments the storage of the etcd", flags=(
        Flag("data-dir", str, "Required. Defragments a data directory not in use by etcd."),
    ), required=("data-dir",)),
    Command("help", "help [command]", "Help about any command"),
    Command("snapshot", "snapshot", "Manages etcd node snapshots", subcommands=("restore", "status", "save")),
    Command("snapshot restore", "snapshot restore <filename> --data-dir {output dir} [options]",
            "Restores an etcd member snapshot to an etcd directory", flags=(
                Flag("data-dir", str, "Path to the output data directory"),
                Flag("initial-advertise-peer-urls", str,
                     "List of this member's peer URLs to advertise to the rest of the cluster",
                     "http://localhost:2380"),
                Flag("initial-cluster", str, "Initial cluster configuration for restore bootstrap",
                     "default=http://localhost:2380"),
                Flag("initial-cluster-token", str,
                     "Initial cluster token for the etcd cluster during restore bootstrap", "etcd-cluster"),
                Flag("name", str, "Human-readable name for this member", "default"),
                Flag("skip-hash-check", bool,
                     "Ignore snapshot integrity hash value (required if copied from data directory)", False),
                Flag("wal-dir", str, "Path to the WAL directory (use --data-dir if none given)"),
            ), required=("data-dir",)),
    Command("snapshot save", "snapshot save <filename>", "Stores an etcd node backend snapshot to a given file",
            hidden=True),
    Command("snapshot status", "snapshot status <filename>", "Gets backend snapshot status of a given file"),
    Command("version", "version", "Prints the version of etcdutl"),
)}


class UsageError(Exception):
    """A command line cobra refuses before running the command."""


class ExitError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv, sys.stdout, sys.stderr)
    except BrokenPipeError:
        return EXIT_ERROR


def run(argv: list[str], out, err) -> int:
    cmd, rest = find_command(argv)
    if cmd is None:
        name = rest[0]
        text = f'unknown command "{name}" for "etcdutl"'
        err.write(f"Error: {text}\nRun 'etcdutl --help' for usage.\nError: {text}\n")
        return EXIT_ERROR
    try:
        flags, args = parse_flags(cmd, rest)
    except UsageError as exc:
        err.write(f"Error: {exc}\n{usage(cmd)}\nError: {exc}\n")
        return EXIT_ERROR
    if flags.get("help"):
        out.write(usage(cmd))
        return 0
    if cmd.subcommands and cmd.path != "":
        out.write(usage(cmd))
        return 0
    missing = sorted(name for name in cmd.required if name not in flags)
    if missing:
        text = "required flag(s) " + ", ".join(f'"{m}"' for m in missing) + " not set"
        err.write(f"Error: {text}\n{usage(cmd)}\nError: {text}\n")
        return EXIT_ERROR
    values = {f.name: flags.get(f.name, f.default) for f in cmd.flags + GLOBAL_FLAGS}
    try:
        return _RUN[cmd.path](values, args, out, err)
    except ExitError as exc:
        err.write(f"Error: {exc}\n")
        return exc.code


def find_command(argv: list[str]) -> tuple[Command | None, list[str]]:
    """The command the leading words name, and the remaining arguments (flags and positionals)."""
    value_flags = {f.name for c in COMMANDS.values() for f in c.flags + GLOBAL_FLAGS if f.kind is str}
    value_shorts = {f.short for f in GLOBAL_FLAGS if f.short and f.kind is str}
    cmd = COMMANDS[""]
    rest = list(argv)
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            break
        if a.startswith("--"):
            i += 2 if ("=" not in a and a[2:] in value_flags) else 1
            continue
        if a.startswith("-") and len(a) > 1:
            i += 2 if (len(a) == 2 and a[1] in value_shorts) else 1
            continue
        if a in cmd.subcommands:
            cmd = COMMANDS[f"{cmd.path} {a}".strip()]
            del rest[i]
            continue
        if cmd.path == "":
            return None, [a]
        break  # a command group shows its usage whatever follows
    return cmd, rest


def parse_flags(cmd: Command, argv: list[str]) -> tuple[dict, list[str]]:
    known = {f.name: f for f in cmd.flags + GLOBAL_FLAGS}
    shorts = {f.short: f for f in cmd.flags + GLOBAL_FLAGS if f.short}
    flags: dict[str, object] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            args.extend(argv[i:])
            break
        if a in ("-h", "--help"):
            flags["help"] = True
            continue
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            f = known.get(name)
            if f is None:
                raise UsageError(f"unknown flag: --{name}")
        elif a.startswith("-") and len(a) > 1:
            name, value, eq = a[1], a[2:], ""
            if value.startswith("="):
                value, eq = value[1:], "="
            elif value:
                eq = "="
            f = shorts.get(name)
            if f is None:
                raise UsageError(f"unknown shorthand flag: '{name}' in {a}")
        else:
            args.append(a)
            continue
        if f.kind is bool:
            if eq:
                if value.lower() not in ("1", "0", "t", "f", "true", "false"):
                    raise UsageError(f'invalid argument "{value}" for "--{f.name}" flag: '
                                     f'strconv.ParseBool: parsing "{value}": invalid syntax')
                flags[f.name] = value.lower() in ("1", "t", "true")
            else:
                flags[f.name] = True
            continue
        if not eq:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: --{f.name}")
            value = argv[i]
            i += 1
        flags[f.name] = value
    return flags, args


def _flag_lines(flags) -> list[str]:
    rows = []
    for f in sorted(flags, key=lambda f: f.name):
        head = f"  -{f.short}, --{f.name}" if f.short else f"      --{f.name}"
        if f.kind is str:
            head += " string"
        text = f.usage
        if f.kind is str and f.default:
            text += f' (default "{f.default}")'
        elif f.kind is bool and f.default:
            text += " (default true)"
        rows.append((head, text))
    width = max(len(h) for h, _ in rows)
    return [h.ljust(width) + "   " + t for h, t in rows]


def usage(cmd: Command) -> str:
    help_flag = Flag("help", bool, f"help for {cmd.path.split(' ')[-1] or 'etcdutl'}", False, "h")
    lines = ["Usage:"]
    if cmd.path == "":
        lines.append("  etcdutl [command]")
    elif cmd.subcommands:
        lines.append(f"  etcdutl {cmd.path} [command]")
    else:
        lines.append(f"  etcdutl {cmd.use} [flags]")
    if cmd.subcommands:
        subs = [COMMANDS[f"{cmd.path} {s}".strip()] for s in cmd.subcommands]
        subs = sorted((c for c in subs if not c.hidden), key=lambda c: c.path)
        width = max(len(c.path.split(" ")[-1]) for c in subs)
        lines += ["", "Available Commands:"]
        lines += [f"  {c.path.split(' ')[-1].ljust(max(width, 11))} {c.short}" for c in subs]
    lines += ["", "Flags:"]
    if cmd.path == "":
        lines += _flag_lines((help_flag,) + GLOBAL_FLAGS)
    else:
        lines += _flag_lines(cmd.flags + (help_flag,))
        lines += ["", "Global Flags:"] + _flag_lines(GLOBAL_FLAGS)
    if cmd.subcommands:
        lines += ["", f'Use "etcdutl {(cmd.path + " ") if cmd.path else ""}[command] --help" for more information '
                      "about a command."]
    return "\n".join(lines) + "\n"


# ---- the commands

def _go_os_error(op: str, exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{op} {exc.filename}: {text[:1].lower()}{text[1:]}"


def cmd_snapshot_status(values, args, out, err) -> int:
    from .snapshot import RestoreError, status

    if len(args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    fmt = values["write-out"]
    if fmt not in ("simple", "json", "table", "fields", "protobuf"):
        raise ExitError(EXIT_BAD_FEATURE, "unsupported output format")
    try:
        st = status(args[0])
    except OSError as exc:
        raise ExitError(EXIT_ERROR, _go_os_error("stat" if isinstance(exc, FileNotFoundError) else "open",
                                                 exc)) from None
    except RestoreError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), console.humanize_bytes(st.total_size)]
    if fmt == "simple":
        out.write(", ".join(row) + "\n")
    elif fmt == "json":
        out.write(json.dumps(st.as_json(), separators=(",", ":")) + "\n")
    elif fmt == "table":
        out.write(console.table(["hash", "revision", "total keys", "total size"], [row]) + "\n")
    elif fmt == "fields":
        out.write(f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n"Keys" : {st.total_key}\n'
                  f'"Size" : {st.total_size}\n')
    else:
        raise ExitError(EXIT_BAD_FEATURE, "protobuf not supported as output format")
    return 0


def cmd_snapshot_restore(values, args, out, err) -> int:
    from .snapshot import RestoreConfig, RestoreError, restore

    if len(args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    cfg = RestoreConfig(
        snapshot_path=args[0],
        name=values["name"],
        data_dir=values["data-dir"],
        wal_dir=values["wal-dir"],
        peer_urls=tuple(values["initial-advertise-peer-urls"].split(",")),
        initial_cluster=values["initial-cluster"],
        initial_cluster_token=values["initial-cluster-token"],
        skip_hash_check=values["skip-hash-check"],
    )
    try:
        restore(cfg, console.ConsoleLog(err))
    except OSError as exc:
        raise ExitError(EXIT_ERROR, _go_os_error("open", exc)) from None
    except RestoreError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    return 0


def cmd_snapshot_save(values, args, out, err) -> int:
    err.write('Command "save" is deprecated, Use `etcdctl snapshot save` to download snapshot\n')
    raise ExitError(EXIT_BAD_ARGS, "In order to download snapshot use: `etcdctl snapshot save ...`")


def cmd_defrag(values, args, out, err) -> int:
    from .defrag import defrag_data

    data_dir = values["data-dir"]
    try:
        defrag_data(data_dir, console.ConsoleLog(err), err)
    except OSError as exc:
        raise ExitError(EXIT_ERROR, f"Failed to defragment etcd data[{data_dir}] ({_go_os_error('open', exc)})") \
            from None
    except Exception as exc:
        raise ExitError(EXIT_ERROR, f"Failed to defragment etcd data[{data_dir}] ({exc})") from None
    return 0


def cmd_backup(values, args, out, err) -> int:
    from .backup import BackupError, backup

    log = console.ConsoleLog(err)
    try:
        backup(values["data-dir"], values["backup-dir"], values["wal-dir"], values["backup-wal-dir"],
               values["with-v3"], log)
    except BackupError as exc:
        log.fatal(exc.caller, exc.msg, exc.fields)  # etcdutl exits from its logger, no "Error:" line
        return EXIT_ERROR
    return 0


def cmd_version(values, args, out, err) -> int:
    version = trietcd.etcd_version
    out.write(f"etcdutl version: {version}\nAPI version: {'.'.join(version.split('.')[:2])}\n")
    return 0


def cmd_help(values, args, out, err) -> int:
    path = " ".join(args)
    out.write(usage(COMMANDS.get(path, COMMANDS[""])))
    return 0


def cmd_root(values, args, out, err) -> int:
    out.write(usage(COMMANDS[""]))
    return 0


_RUN = {
    "": cmd_root,
    "backup": cmd_backup,
    "defrag": cmd_defrag,
    "help": cmd_help,
    "snapshot restore": cmd_snapshot_restore,
    "snapshot save": cmd_snapshot_save,
    "snapshot status": cmd_snapshot_status,
    "version": cmd_version,
}
