"""`python -m appliance` is the `fieldbox` command."""

from appliance.cli import main

main()
