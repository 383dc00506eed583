"""The web console: the fleet, rollouts and the decision timeline in a browser, over the log
(docs/console.md)."""
