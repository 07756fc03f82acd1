"""``python -m gateway`` is the ``jitsi-oidc-gateway`` command."""

import sys

from gateway.cli import main

sys.exit(main())
