#!/usr/bin/python3
"""mailstack-acme: the command of the acme image (the package mailstack_acme says what it does).

Installed as /usr/local/bin/mailstack-acme, with the package beside Debian's own Python
modules rather than among them: /usr/lib/python3/dist-packages belongs to dpkg.
"""

import sys

sys.path.insert(0, "/usr/local/lib/mailstack-acme")

from mailstack_acme.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
