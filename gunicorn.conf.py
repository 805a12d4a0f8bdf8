"""gunicorn settings, read from the working directory (the Docker image and `.ci`/bench runs start there).

The worker timeout must exceed CRYSTALLISE_SYNC_TIMEOUT (25 s by default), the time limit of the
synchronous LLM endpoints: they then always answer in JSON instead of being killed mid-request.
"""

timeout = 60
