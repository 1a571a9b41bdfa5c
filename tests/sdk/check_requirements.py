"""Exit 0 when every `name==version` pin of a requirements file is installed (dev.sh uses it
to skip pip when nothing is missing)."""
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        ok &= metadata.version(name.strip()) == version.strip()
    except metadata.PackageNotFoundError:
        ok = False
sys.exit(0 if ok else 1)
