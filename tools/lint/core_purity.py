#!/usr/bin/env python3
"""Checks that the sans-I/O cores stay free of sockets, threads, clocks and ambient
randomness (DESIGN.md §2 point 1), so they stay deterministic and keep building for wasm.

Scans the core source folders and fails (exit 1) listing every forbidden use.
Native shells (src/base/native, and later the engine/runtime server folders) are exempt.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE_DIRS = ["src/base", "src/protocol", "src/engine/orchestrator", "src/engine/gateway",
             "src/value", "src/wire", "src/envoy", "src/runtime"]
EXEMPT_DIRS = ["src/base/native", "src/envoy/native", "src/runtime/native"]
FORBIDDEN = [
    (re.compile(r"#\s*include\s*[<\"](boost/)?asio"), "Asio"),
    (re.compile(r"#\s*include\s*[<\"]boost/beast"), "Beast"),
    (re.compile(r"#\s*include\s*<(thread|mutex|condition_variable|future|shared_mutex)>"), "threads"),
    (re.compile(r"\b(system_clock|steady_clock|high_resolution_clock)::now\b"), "real clock"),
    (re.compile(r"\brandom_device\b"), "ambient randomness"),
    (re.compile(r"#\s*include\s*<(sys/socket|netinet/|arpa/inet|unistd)"), "OS I/O"),
    (re.compile(r"#\s*include\s*[<\"](rocksdb|sqlite3|libpq)"), "storage library"),
    (re.compile(r"\bTODO\(now\)"), "TODO(now) must be resolved before landing"),
]


def main() -> int:
    problems = []
    for core in CORE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, core)):
            rel_dir = os.path.relpath(dirpath, ROOT)
            if any(rel_dir == e or rel_dir.startswith(e + os.sep) for e in EXEMPT_DIRS):
                continue
            for name in files:
                if not name.endswith((".h", ".cc")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        for pattern, what in FORBIDDEN:
                            if pattern.search(line):
                                problems.append(f"{os.path.relpath(path, ROOT)}:{lineno}: {what}: {line.strip()}")
    for p in problems:
        print(p)
    print(f"core purity: {len(problems)} problem(s) in {', '.join(CORE_DIRS)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
