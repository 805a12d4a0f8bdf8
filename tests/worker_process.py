"""A real worker process for crash tests: runs one job with the service's own code.

python -m tests.worker_process JOB_ID   (env: tests.workers.process_env(), CONCURRENCY, STALE_SECONDS, WORKER_NICE)
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crystallise_site.settings.test")
    import django
    from django.conf import settings

    django.setup()
    settings.CRYSTALLISE_LLM_CONCURRENCY = int(os.environ.get("CONCURRENCY", "4"))
    settings.CRYSTALLISE_JOB_STALE_SECONDS = int(os.environ.get("STALE_SECONDS", "60"))
    settings.CRYSTALLISE_WORKER_NICE = int(os.environ.get("WORKER_NICE", "0"))
    from screening.services import job_run

    print("STATUS", job_run(job_id=sys.argv[1]), flush=True)
    print("NICE", os.nice(0), flush=True)


if __name__ == "__main__":
    main()
