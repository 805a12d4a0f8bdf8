from django.apps import AppConfig


class ScreeningConfig(AppConfig):
    name = "screening"

    def ready(self) -> None:
        from crystallise.llm.mock import register_mock_answer
        from screening import mock_answers

        register_mock_answer(mock_answers.SCHEMA_NAME, mock_answers.mock_answer)
