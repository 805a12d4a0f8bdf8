"""One rate limiter per provider key, shared by every job, process and host through the database.

`lease` holds the database side (shares of a key's limit leased per job run),
`shared` a job's side (renewing its lease, handing the share to its pacer),
`window` the adjustable bound on a job's calls in flight.
"""
