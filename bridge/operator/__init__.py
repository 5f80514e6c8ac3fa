"""The operator's side of the bridge: the browser softphone, the live console, and the
access control in front of both (see ``access``)."""
