from django.apps import AppConfig


class CriteriaConfig(AppConfig):
    name = "criteria"

    def ready(self) -> None:
        from criteria import mock_answers
        from crystallise.llm.mock import register_mock_answer

        register_mock_answer(mock_answers.SCHEMA_NAME, mock_answers.mock_answer)
