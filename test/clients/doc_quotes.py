# test/clients/doc_quotes.py: every code block of docs/orms.md that is not
# SQL (```python, ```ruby, ```js, ```java, ```xml) must be code the clients
# suite runs: its lines, in order, must appear together in one file under
# test/clients/ (compared without leading and trailing blanks, so a block
# may be dedented).  The SQL blocks are the doc test's business.  TAP output.
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
doc = os.path.join(root, "docs", "orms.md")
sources = {}
for d, _, files in os.walk(os.path.join(root, "test", "clients")):
    if "node_modules" in d:
        continue
    for f in files:
        if re.search(r"\.(py|rb|js|java|xml)$", f):
            p = os.path.join(d, f)
            sources[os.path.relpath(p, root)] = [l.strip() for l in open(p).read().split("\n")]

lines = open(doc).read().split("\n")
n = failed = 0
i = 0
while i < len(lines):
    m = re.match(r"^```(python|ruby|js|java|xml)\s*$", lines[i])
    if not m:
        i += 1
        continue
    j = i + 1
    while lines[j] != "```":
        j += 1
    block = [l.strip() for l in lines[i + 1:j]]
    found = [p for p, src in sources.items()
             if any(src[k:k + len(block)] == block for k in range(len(src) - len(block) + 1))]
    n += 1
    if found:
        print("ok %d - docs/orms.md:%d %s block is run from %s" % (n, i + 1, m.group(1), found[0]))
    else:
        failed += 1
        print("not ok %d - docs/orms.md:%d %s block is run from a file under test/clients/" % (n, i + 1, m.group(1)))
    i = j + 1
print("1..%d" % n)
sys.exit(1 if failed or n == 0 else 0)
