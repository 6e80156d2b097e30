#!/usr/bin/env python3
"""Run the documentation's command blocks, so that a documented command, default or
output that changes fails the test suite.

    scripts/doctest.py BIN_DIR FILE.md...

A block fenced as ```sh doctest is run (GitHub shows it as plain `sh`). All such blocks
of one file run in order, in one bash session (variables set in one block hold in the
next), in a fresh empty directory, with BIN_DIR (where `jotgate` is) first on PATH and
no JOTGATE_* variable set. In a block:

- each command (with its `\\` continuation lines) must exit 0;
- `# => TEXT`, at the end of a command's last line or on the lines after it, says what
  its output (stdout and stderr) must contain; `...` in TEXT matches anything;
- `# => exit N` says the command must exit with N instead;
- a command ending in `&` runs in the background (its output is dropped) until the
  file's blocks are done;
- a line `<!-- doctest: COMMAND -->` outside the blocks (not rendered) runs COMMAND in
  its place: set-up the reader has already done, such as starting the server;
- any other comment is commentary.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```sh doctest\s*$")
HIDDEN = re.compile(r"^<!-- doctest: (.*) -->\s*$")


def blocks(text):
    out, cur = [], None
    for n, line in enumerate(text.splitlines(), 1):
        if cur is None:
            hidden = HIDDEN.match(line)
            if hidden:
                # A set-up command the reader does not need to see (an HTML comment: not
                # rendered), e.g. starting the server the text says is running.
                out.append([(n, hidden.group(1))])
            elif FENCE.match(line):
                cur = []
        elif line.startswith("```"):
            out.append(cur)
            cur = None
        else:
            cur.append((n, line))
    return out


def steps(lines):
    """[(line number, command, [expectations], exit code)]"""
    result = []
    pending = ""
    start = None
    heredoc = None
    for n, raw in lines:
        stripped = raw.strip()
        if heredoc is not None:
            pending += raw + "\n"
            if stripped == heredoc:
                result.append([start, pending.rstrip("\n"), [], 0])
                pending, start, heredoc = "", None, None
            continue
        if not pending and stripped.startswith("# =>"):
            if not result:
                raise SystemExit(f"line {n}: an expectation before any command")
            expect(result[-1], stripped[len("# =>"):].strip())
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if start is None:
            start = n
        line = raw
        if line.rstrip().endswith("\\"):
            pending += line.rstrip() + "\n"
            continue
        m = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
        if m:
            heredoc = m.group(1)
            pending += line + "\n"
            continue
        pending += line
        cmd, _, exp = pending.partition(" # => ")
        if not exp:
            cmd = re.sub(r"\s+#\s[^'\"]*$", "", cmd)  # trailing commentary
        step = [start, cmd.rstrip(), [], 0]
        if exp:
            expect(step, exp.strip())
        result.append(step)
        pending, start = "", None
    return result


def expect(step, text):
    m = re.fullmatch(r"exit (\d+)", text)
    if m:
        step[3] = int(m.group(1))
    else:
        step[2].append(text)


def pattern(text):
    return re.compile(".*?".join(re.escape(p) for p in text.split("...")), re.S)


def run_file(bin_dir, path):
    with open(path, encoding="utf-8") as f:
        all_steps = [s for b in blocks(f.read()) for s in steps(b)]
    if not all_steps:
        return 0
    work = tempfile.mkdtemp(prefix="jotgate-doctest-")
    outdir = os.path.join(work, ".doctest")
    os.mkdir(outdir)
    # Job control: each background command in a process group of its own, ended whole.
    script = ["set -u -m", f"cd {work}"]
    for i, (_, cmd, _, _) in enumerate(all_steps):
        if cmd.rstrip().endswith("&"):
            script.append(f"{{ {cmd.rstrip()[:-1]} ; }} >{outdir}/{i}.out 2>&1 </dev/null &")
            script.append(f"echo 0 >{outdir}/{i}.rc")
        else:
            script.append(f"{{ {cmd}\n}} >{outdir}/{i}.out 2>&1 </dev/null; echo $? >{outdir}/{i}.rc")
    script.append("for p in $(jobs -p); do kill -- -$p 2>/dev/null; done; wait 2>/dev/null; true")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOTGATE_")}
    env["PATH"] = os.path.abspath(bin_dir) + os.pathsep + env.get("PATH", "")
    subprocess.run(["bash", "-c", "\n".join(script)], env=env, timeout=600, check=False)
    failures = 0
    for i, (line, cmd, expects, code) in enumerate(all_steps):
        try:
            out = open(os.path.join(outdir, f"{i}.out"), encoding="utf-8", errors="replace").read()
            rc = int(open(os.path.join(outdir, f"{i}.rc")).read().strip() or -1)
        except (OSError, ValueError):
            out, rc = "(not run: an earlier command broke the script)", -1
        problems = []
        if rc != code:
            problems.append(f"exit {rc}, documented {code}")
        for e in expects:
            if not pattern(e).search(out):
                problems.append(f"output lacks {e!r}")
        if problems:
            failures += 1
            print(f"{path}:{line}: {cmd.splitlines()[0]}")
            for p in problems:
                print(f"    {p}")
            print("    output: " + out.strip().replace("\n", "\n            ")[:1500])
    shutil.rmtree(work, ignore_errors=True)
    print(f"doctest: {path}: {len(all_steps)} commands, {failures} failed")
    return failures


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    failures = sum(run_file(sys.argv[1], p) for p in sys.argv[2:])
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
