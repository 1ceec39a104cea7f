"""The metadata routes refuse what Dataverse refuses: every `$select`/`$filter` name is checked against the
metadata EntityType the path addresses (EntityMetadata, AttributeMetadata, or the derived type of a cast), as
[PD] webapi/query-metadata-web-api.md describes; the casts answer only their type's attributes; DateTime columns
say their DateTimeBehavior and Format as Microsoft's table reference gives them, and their values follow it.

Expected property lists come from sandbox/metadata_types.py (Microsoft's metadata reference, cited there) and
expected behaviours from the table reference pages named in each test, never from the routes under test.
"""

from __future__ import annotations

import re

import pytest

from sandbox import metadata_types as mt
from sandbox.metadata import attribute_rows, attribute_type
from sandbox.runtime import Sandbox
from sandbox.schema import TABLES
from tests.sandbox.conftest import ApiClient, error_of

CRM = "Microsoft.Dynamics.CRM."
OPP = "EntityDefinitions(LogicalName='opportunity')"
# Microsoft's table reference (MicrosoftDocs/dynamics-365-customer-engagement ce/developer/reference/entities/
# <table>.md): (DateTimeBehavior, Format) of the DateTime columns l2c reads besides createdon/modifiedon.
REFERENCE_DATES = {
    ("opportunity", "estimatedclosedate"): ("DateOnly", "DateOnly"),
    ("opportunity", "actualclosedate"): ("DateOnly", "DateOnly"),
    ("quote", "closedon"): ("DateOnly", "DateOnly"),
    ("quote", "effectivefrom"): ("UserLocal", "DateOnly"),
    ("quote", "effectiveto"): ("UserLocal", "DateOnly"),
    ("salesorder", "submitdate"): ("UserLocal", "DateOnly"),
    ("salesorder", "datefulfilled"): ("UserLocal", "DateOnly"),
    ("invoice", "duedate"): ("DateOnly", "DateOnly"),
    ("invoice", "datedelivered"): ("UserLocal", "DateOnly"),
}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def refused(client: ApiClient, target: str) -> tuple[int, str, str]:
    return error_of(client.get(target))


def missing(name: str, type_name: str) -> tuple[int, str, str]:
    # realdata payload 28: Dataverse's answer to a derived type's property selected on the base collection.
    return 400, "0x80060888", f"Could not find a property named '{name}' on type '{CRM}{type_name}'."


def test_a_derived_types_property_on_the_attributes_collection_is_dataverses_400(api_client: ApiClient) -> None:
    assert refused(api_client, f"{OPP}/Attributes?$select=LogicalName,Format") == missing("Format", "AttributeMetadata")
    assert refused(api_client, f"{OPP}/Attributes?$select=LogicalName,ColumnNumber,AttributeType,Format,"
                               "DateTimeBehavior,IsAuditEnabled") == missing("Format", "AttributeMetadata")
    assert refused(api_client, f"{OPP}/Attributes?$filter=Format eq 'DateOnly'") == missing(
        "Format", "AttributeMetadata")


def test_the_datetime_cast_answers_its_attributes_with_their_reference_behaviour(api_client: ApiClient) -> None:
    body = api_client.ok(f"{OPP}/Attributes/{CRM}DateTimeAttributeMetadata?$select=LogicalName,Format,"
                         "DateTimeBehavior")
    assert body["@odata.context"].endswith(f"$metadata#{OPP.replace('LogicalName=', '')}/Attributes/"
                                           f"{CRM}DateTimeAttributeMetadata(LogicalName,Format,DateTimeBehavior)")
    by_name = {a["LogicalName"]: a for a in body["value"]}
    datetimes = {c.name for c in TABLES["opportunity"].columns if c.type == "DateTime"}
    assert set(by_name) == datetimes  # only the cast's type
    for row in by_name.values():
        assert set(row) == {"MetadataId", "LogicalName", "Format", "DateTimeBehavior"}  # no @odata.type: as cast
    assert by_name["estimatedclosedate"]["DateTimeBehavior"] == {"Value": "DateOnly"}
    assert by_name["estimatedclosedate"]["Format"] == "DateOnly"
    assert by_name["createdon"]["DateTimeBehavior"] == {"Value": "UserLocal"}
    assert by_name["createdon"]["Format"] == "DateAndTime"


@pytest.mark.parametrize(("table", "column"), sorted(REFERENCE_DATES))
def test_each_date_columns_behaviour_and_format_follow_microsofts_table_reference(api_client: ApiClient, table: str,
                                                                                  column: str) -> None:
    body = api_client.ok(f"EntityDefinitions(LogicalName='{table}')/Attributes(LogicalName='{column}')/"
                         f"{CRM}DateTimeAttributeMetadata?$select=Format,DateTimeBehavior")
    assert (body["DateTimeBehavior"]["Value"], body["Format"]) == REFERENCE_DATES[(table, column)]


def test_date_only_values_are_calendar_days_everywhere_and_user_local_ones_instants(
        api_client: ApiClient, api_sandbox: Sandbox) -> None:
    """[PD] behavior-format-date-time-attribute.md: DateOnly behaviour is Edm.Date ("exposed as Date"), every
    other behaviour a DateTimeOffset, whatever the Format."""
    for (table, column), (behavior, _) in REFERENCE_DATES.items():
        values = [row[column] for row in api_client.ok(
            f"{TABLES[table].entity_set}?$select={column}&$filter={column} ne null")["value"]]
        assert values, (table, column)
        shape = DAY if behavior == "DateOnly" else INSTANT
        assert all(shape.match(v) for v in values), (table, column, values[:3])
    # The same in audit details: an old/new actualclosedate is a day.
    audit = api_client.ok("audits?$select=auditid&$filter=objecttypecode eq 'opportunity' and action eq 44")
    detail = api_client.ok(f"audits({audit['value'][0]['auditid']})/{CRM}RetrieveAuditDetails")["AuditDetail"]
    assert DAY.match(detail["NewValue"]["actualclosedate"])
    # And in $filter: a date literal selects a DateOnly column's rows.
    day = api_client.ok("opportunities?$select=estimatedclosedate&$filter=estimatedclosedate ne null")[
        "value"][0]["estimatedclosedate"]
    hits = api_client.ok(f"opportunities?$select=estimatedclosedate&$filter=estimatedclosedate eq {day}")["value"]
    assert hits and {h["estimatedclosedate"] for h in hits} == {day}


def test_every_property_a_type_lacks_is_refused_on_it_and_served_by_its_cast(api_client: ApiClient) -> None:
    """For each derived type the org serves: its own properties are refused on the base collection and
    accepted through its cast, where only that type's attributes come back."""
    served = {attribute_type(c) for c in TABLES["opportunity"].columns}
    base = mt.properties("AttributeMetadata")
    for type_name in sorted(served):
        own = [p for p in mt.properties(type_name) if p not in base]
        for name in own:
            assert refused(api_client, f"{OPP}/Attributes?$select=LogicalName,{name}") == missing(
                name, "AttributeMetadata"), (type_name, name)
        body = api_client.ok(f"{OPP}/Attributes/{CRM}{type_name}?$select=LogicalName,{','.join(own or ['SchemaName'])}")
        expected = {c.name for c in TABLES["opportunity"].columns if mt.is_a(attribute_type(c), type_name)}
        assert {a["LogicalName"] for a in body["value"]} == expected, type_name


def test_every_attributemetadata_and_entitymetadata_property_is_accepted(api_client: ApiClient) -> None:
    for target, type_name in ((f"{OPP}/Attributes", "AttributeMetadata"), ("EntityDefinitions", "EntityMetadata")):
        names = sorted(mt.properties(type_name))
        body = api_client.ok(f"{target}?$select={','.join(names)}")
        assert body["value"] and all(set(row) <= {"@odata.type", *names} for row in body["value"])
    assert refused(api_client, "EntityDefinitions?$select=LogicalName,ColumnNumber") == missing(
        "ColumnNumber", "EntityMetadata")
    assert refused(api_client, "EntityDefinitions?$filter=ColumnNumber eq 1") == missing(
        "ColumnNumber", "EntityMetadata")


def test_rows_carry_only_their_types_properties() -> None:
    for table in TABLES.values():
        for row in attribute_rows(table):
            type_name = row["@odata.type"].removeprefix(f"#{CRM}")
            assert set(row) - {"@odata.type"} <= set(mt.properties(type_name)), (table.logical_name, row)


def test_the_base_collection_names_each_rows_derived_type_and_always_its_metadataid(api_client: ApiClient) -> None:
    # realdata payload 14: an uncast Attributes row carries its @odata.type; payload 13: MetadataId unselected.
    body = api_client.ok(f"{OPP}/Attributes?$select=LogicalName")
    kinds = {c.name: attribute_type(c) for c in TABLES["opportunity"].columns}
    assert {row["LogicalName"]: row["@odata.type"] for row in body["value"]} == {
        name: f"#{CRM}{kind}" for name, kind in kinds.items()}
    assert all(set(row) == {"@odata.type", "MetadataId", "LogicalName"} for row in body["value"])
    entity = api_client.ok("EntityDefinitions?$select=EntitySetName&$filter=LogicalName eq 'lead'")["value"]
    assert entity == [{"MetadataId": entity[0]["MetadataId"], "EntitySetName": "leads"}]


def test_entity_definitions_filter_by_several_logical_names(api_client: ApiClient) -> None:
    # The documented shape ([PD] webapi/query-schema-definitions.md): LogicalName eq 'a' or LogicalName eq 'b'.
    body = api_client.ok("EntityDefinitions?$select=LogicalName,ChangeTrackingEnabled,IsAuditEnabled"
                         "&$filter=LogicalName eq 'lead' or LogicalName eq 'audit'")
    assert sorted(row["LogicalName"] for row in body["value"]) == ["audit", "lead"]
    assert all(set(row["IsAuditEnabled"]) == {"Value", "CanBeChanged", "ManagedPropertyLogicalName"}
               for row in body["value"])


@pytest.mark.parametrize(("target", "status"), [
    (f"{OPP}/Attributes/{CRM}NoSuchAttributeMetadata", 404),
    (f"{OPP}/Attributes/{CRM}EntityMetadata", 404),  # a metadata type, but not an attribute's
    (f"{OPP}/Attributes/{CRM}EnumAttributeMetadata", 400),  # "you cannot cast the attributes to this type"
    (f"{OPP}/Attributes?$top=1", 400),
    (f"{OPP}/Attributes?$orderby=LogicalName", 400),
    (f"{OPP}/Attributes/{CRM}PicklistAttributeMetadata?$select=OptionSet", 400),  # a navigation property
    (f"{OPP}/Attributes/{CRM}PicklistAttributeMetadata?$expand=OptionSet", 400),
    (f"{OPP}/Attributes(LogicalName='nosuchcolumn')", 404),
    ("EntityDefinitions(LogicalName='nosuchtable')/Attributes", 404),
])
def test_what_the_sandbox_cannot_or_dataverse_will_not_answer_is_refused(api_client: ApiClient, target: str,
                                                                        status: int) -> None:
    assert refused(api_client, target)[0] == status


def test_one_attribute_by_logical_name_and_its_cast(api_client: ApiClient) -> None:
    one = api_client.ok(f"{OPP}/Attributes(LogicalName='actualclosedate')?$select=LogicalName,AttributeType")
    assert one["@odata.context"].endswith("/$entity") and one["AttributeType"] == "DateTime"
    assert one["@odata.type"] == f"#{CRM}DateTimeAttributeMetadata"
    # a cast to a type the attribute is not: not found
    wrong_type = f"{OPP}/Attributes(LogicalName='actualclosedate')/{CRM}LookupAttributeMetadata"
    assert refused(api_client, wrong_type)[0] == 404
