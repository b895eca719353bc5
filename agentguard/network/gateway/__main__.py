"""``python -m agentguard.network.gateway --config network.json``"""

import sys

from agentguard.network.gateway._app import main

sys.exit(main())
