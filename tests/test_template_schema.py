"""The table every test and the emulation use is built from template.yaml's own schema."""

from __future__ import annotations

from openhands_stop.constants import PARTITION_KEY, RUNS_BY_WORKER_INDEX, WORKERS_INDEX

from local.emulation import Stack, load_template, table_definition


def test_the_emulated_table_has_the_templates_key_schema(stack: Stack) -> None:
    described = stack.client("dynamodb").describe_table(TableName=stack.table_name)["Table"]
    template = table_definition()
    assert described["KeySchema"] == template["KeySchema"]
    assert described["AttributeDefinitions"] == template["AttributeDefinitions"]


def test_the_code_writes_the_partition_key_the_template_declares() -> None:
    key_schema = table_definition()["KeySchema"]
    assert key_schema == [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}]
    attributes = table_definition()["AttributeDefinitions"]
    assert {"AttributeName": "conversation_id", "AttributeType": "S"} in attributes


def test_the_indexes_the_workers_query_are_the_templates() -> None:
    """runs-by-worker: a worker's runs, with every field the backstop reads; workers: the
    liveness items, in key order, with the counter the judges watch."""
    indexes = {i["IndexName"]: i for i in table_definition()["GlobalSecondaryIndexes"]}
    runs = indexes[RUNS_BY_WORKER_INDEX]
    assert runs["KeySchema"] == [{"AttributeName": "worker_instance", "KeyType": "HASH"}]
    assert {"status", "run_id", "stop_id", "stop_request_id", "stopped_at"} <= set(
        runs["Projection"]["NonKeyAttributes"]
    )
    workers = indexes[WORKERS_INDEX]
    assert workers["KeySchema"] == [
        {"AttributeName": "roster", "KeyType": "HASH"},
        {"AttributeName": PARTITION_KEY, "KeyType": "RANGE"},
    ]
    assert {"beat", "dead", "worker_id"} <= set(workers["Projection"]["NonKeyAttributes"])


def test_the_function_gets_every_setting_the_code_reads_from_the_template() -> None:
    from openhands_stop.edge.settings import RouteSettings

    function = load_template()["Resources"]["StopConversationFunction"]["Properties"]
    variables = set(function["Environment"]["Variables"])
    required = {
        field.alias
        for field in RouteSettings.model_fields.values()
        if field.is_required() and field.alias
    }
    assert required <= variables
    assert function["Handler"] == "app.handler"
    assert function["CodeUri"].rstrip("/") == "functions/stop_conversation"
