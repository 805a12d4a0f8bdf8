"""How far a screening job's decisions can be trusted: evaluation against human reviews,
certification by validation samples, and the PRISMA report (see docs/evaluation.md)."""
