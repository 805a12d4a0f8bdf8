from django.apps import AppConfig


class ScreeningConfig(AppConfig):
    name = "screening"

    def ready(self) -> None:
        from crystallise.llm.mock import register_mock_answer
        from screening import mock_answers

        register_mock_answer(mock_answers.SCHEMA_NAME, mock_answers.mock_answer)

        from crystallise.jobs.lifecycle import register_end_hook
        from screening.models import ScreeningJob
        from screening.services import callback_enqueue

        # Every ending of a screening job (completed, failed, cancelled, never queued) sends its callback.
        register_end_hook(ScreeningJob, callback_enqueue)
