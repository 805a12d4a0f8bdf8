from django.apps import AppConfig


class IndexerConfig(AppConfig):
    name = "indexer"

    def ready(self) -> None:
        from crystallise.llm.mock import register_mock_answer
        from indexer import mock_answers

        register_mock_answer(mock_answers.SCHEMA_NAME, mock_answers.mock_answer)
