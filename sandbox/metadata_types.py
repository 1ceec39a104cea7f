"""Microsoft's Web API metadata EntityTypes (the `Microsoft.Dynamics.CRM.*Metadata` types behind `EntityDefinitions`,
`Attributes`, `RelationshipDefinitions` and `GlobalOptionSetDefinitions`) as a typed table the emulator can check
requests against: each type's base type, its own structural properties (name -> Edm type or complex/enum type name as
the reference gives it) and its own navigation properties, kept apart because `$select` takes the former and `$expand`
the latter. The live Web API reference pages (learn.microsoft.com/.../webapi/reference/*) are not in any stored
repository, so the backbone is Microsoft's own markdown of that reference, `progref/webapireference/
metadataentitytypes/` in MicrosoftDocs/dynamics-365-customer-engagement (ms.date 2017-07-10). Properties the service
gained later are added from a real org's full GET payload printed in powerapps-docs, from the learn.microsoft.com
reference page, or from Microsoft's WebAPIService sample classes (microsoft/PowerApps-Samples), each marked where it is
added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Repositories the citations below point into; every citation is `path@commit` inside one of them.
CE = "MicrosoftDocs/dynamics-365-customer-engagement:progref/webapireference/metadataentitytypes"
SAMPLES = "microsoft/PowerApps-Samples:dataverse/webapi/CSharp-NETx/WebAPIService/Metadata/Types"
PAYLOAD = (
    "MicrosoftDocs/powerapps-docs:powerapps-docs/developer/data-platform/webapi/"
    "create-update-column-definitions-using-web-api.md@18c03d0e"
)


@dataclass(frozen=True)
class MetadataType:
    name: str
    base: str | None
    properties: Mapping[str, str] = field(default_factory=dict)
    # Navigation name -> target EntityType; only these may appear in `$expand`.
    navigation: Mapping[str, str] = field(default_factory=dict)


def _t(
    name: str, base: str | None, properties: dict[str, str], navigation: dict[str, str] | None = None
) -> MetadataType:
    # Read-only views, so a caller cannot widen what the emulator accepts by mutating a shared table.
    return MetadataType(name, base, MappingProxyType(dict(properties)), MappingProxyType(dict(navigation or {})))


BMP = "BooleanManagedProperty"
_LIST: list[MetadataType] = [
    # {CE}/crmmodelbaseentity.md@38b53f2b: root of all metadata types, "Has no properties".
    _t("crmmodelbaseentity", None, {}),
    # {CE}/metadatabase.md@78b919c1 (Base Type crmmodelbaseentity, Primary Key MetadataId).
    _t("MetadataBase", "crmmodelbaseentity", {"HasChanged": "Edm.Boolean", "MetadataId": "Edm.Guid"}),
    # {CE}/entitymetadata.md@50950770; entries marked S come from {SAMPLES}/EntityMetadata.cs@f098e0b0 (C# type
    # mapped to its Edm type by us, so the Edm type of an S entry is inferred).
    _t(
        "EntityMetadata",
        "MetadataBase",
        {
            "ActivityTypeMask": "Edm.Int32",
            "AutoCreateAccessTeams": "Edm.Boolean",
            "AutoRouteToOwnerQueue": "Edm.Boolean",
            "CanBeInCustomEntityAssociation": BMP,  # S
            "CanBeInManyToMany": BMP,
            "CanBePrimaryEntityInRelationship": BMP,
            "CanBeRelatedEntityInRelationship": BMP,
            "CanChangeHierarchicalRelationship": BMP,
            "CanChangeTrackingBeEnabled": BMP,
            "CanCreateAttributes": BMP,
            "CanCreateCharts": BMP,
            "CanCreateForms": BMP,
            "CanCreateViews": BMP,
            "CanEnableSyncToExternalSearchIndex": BMP,
            "CanModifyAdditionalSettings": BMP,
            "CanTriggerWorkflow": "Edm.Boolean",
            "ChangeTrackingEnabled": "Edm.Boolean",
            "CollectionSchemaName": "Edm.String",
            "CreatedOn": "Edm.DateTimeOffset",  # S
            "DataProviderId": "Edm.Guid",
            "DataSourceId": "Edm.Guid",
            "DaysSinceRecordLastModified": "Edm.Int32",
            "Description": "Label",
            "DisplayCollectionName": "Label",
            "DisplayName": "Label",
            "EnforceStateTransitions": "Edm.Boolean",
            "EntityColor": "Edm.String",
            "EntityHelpUrl": "Edm.String",
            "EntityHelpUrlEnabled": "Edm.Boolean",
            "EntitySetName": "Edm.String",
            "ExternalCollectionName": "Edm.String",
            "ExternalName": "Edm.String",
            "HasActivities": "Edm.Boolean",
            "HasFeedback": "Edm.Boolean",
            "HasNotes": "Edm.Boolean",
            "IconLargeName": "Edm.String",
            "IconMediumName": "Edm.String",
            "IconSmallName": "Edm.String",
            "IconVectorName": "Edm.String",
            "IntroducedVersion": "Edm.String",
            "IsActivity": "Edm.Boolean",
            "IsActivityParty": "Edm.Boolean",
            "IsAIRUpdated": "Edm.Boolean",
            "IsAuditEnabled": BMP,
            "IsAvailableOffline": "Edm.Boolean",
            "IsBPFEntity": "Edm.Boolean",
            "IsBusinessProcessEnabled": "Edm.Boolean",
            "IsChildEntity": "Edm.Boolean",
            "IsConnectionsEnabled": BMP,
            "IsCustomEntity": "Edm.Boolean",
            "IsCustomizable": BMP,
            "IsDocumentManagementEnabled": "Edm.Boolean",
            "IsDocumentRecommendationsEnabled": "Edm.Boolean",
            "IsDuplicateDetectionEnabled": BMP,
            "IsEnabledForCharts": "Edm.Boolean",
            "IsEnabledForExternalChannels": "Edm.Boolean",
            "IsEnabledForTrace": "Edm.Boolean",
            "IsImportable": "Edm.Boolean",
            "IsInteractionCentricEnabled": "Edm.Boolean",
            "IsIntersect": "Edm.Boolean",
            "IsKnowledgeManagementEnabled": "Edm.Boolean",
            "IsLogicalEntity": "Edm.Boolean",
            "IsMailMergeEnabled": BMP,
            "IsManaged": "Edm.Boolean",
            "IsMappable": BMP,
            "IsMSTeamsIntegrationEnabled": "Edm.Boolean",  # S
            "IsOfflineInMobileClient": BMP,
            "IsOneNoteIntegrationEnabled": "Edm.Boolean",
            "IsOptimisticConcurrencyEnabled": "Edm.Boolean",
            "IsPrivate": "Edm.Boolean",
            "IsQuickCreateEnabled": "Edm.Boolean",
            "IsReadingPaneEnabled": "Edm.Boolean",
            "IsReadOnlyInMobileClient": BMP,
            "IsRenameable": BMP,
            "IsSLAEnabled": "Edm.Boolean",
            "IsSolutionAware": "Edm.Boolean",  # S
            "IsStateModelAware": "Edm.Boolean",
            "IsValidForAdvancedFind": "Edm.Boolean",
            "IsValidForQueue": BMP,
            "IsVisibleInMobile": BMP,
            "IsVisibleInMobileClient": BMP,
            "LogicalCollectionName": "Edm.String",
            "LogicalName": "Edm.String",
            "MobileOfflineFilters": "Edm.String",
            "ModifiedOn": "Edm.DateTimeOffset",  # S
            "ObjectTypeCode": "Edm.Int32",
            "OwnershipType": "OwnershipTypes",
            "PrimaryIdAttribute": "Edm.String",
            "PrimaryImageAttribute": "Edm.String",
            "PrimaryNameAttribute": "Edm.String",
            "Privileges": "Collection(SecurityPrivilegeMetadata)",
            "RecurrenceBaseEntityLogicalName": "Edm.String",
            "ReportViewName": "Edm.String",
            "SchemaName": "Edm.String",
            "SettingOf": "Edm.String",  # S
            "Settings": "Collection(EntitySetting)",  # S
            "SyncToExternalSearchIndex": "Edm.Boolean",
            "TableType": "Edm.String",  # S
            "UsesBusinessDataLabelTable": "Edm.Boolean",
        },
        {
            "Attributes": "AttributeMetadata",
            "Keys": "EntityKeyMetadata",
            "ManyToManyRelationships": "ManyToManyRelationshipMetadata",
            "ManyToOneRelationships": "OneToManyRelationshipMetadata",
            "OneToManyRelationships": "OneToManyRelationshipMetadata",
        },
    ),
    # {CE}/attributemetadata.md@09b7f683 ("Has no single-valued navigation properties. Has no collection-valued
    # navigation properties."); entries marked P are in a real org's full GET in {PAYLOAD}, CreatedOn also on
    # learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/reference/attributemetadata.
    _t(
        "AttributeMetadata",
        "MetadataBase",
        {
            "AttributeOf": "Edm.String",
            "AttributeType": "AttributeTypeCode",
            "AttributeTypeName": "AttributeTypeDisplayName",
            "AutoNumberFormat": "Edm.String",
            "CanBeSecuredForCreate": "Edm.Boolean",
            "CanBeSecuredForRead": "Edm.Boolean",
            "CanBeSecuredForUpdate": "Edm.Boolean",
            "CanModifyAdditionalSettings": BMP,
            "ColumnNumber": "Edm.Int32",
            "CreatedOn": "Edm.DateTimeOffset",  # P
            "DeprecatedVersion": "Edm.String",
            "Description": "Label",
            "DisplayName": "Label",
            "EntityLogicalName": "Edm.String",
            "ExternalName": "Edm.String",
            "InheritsFrom": "Edm.String",
            "IntroducedVersion": "Edm.String",
            "IsAuditEnabled": BMP,
            "IsCustomAttribute": "Edm.Boolean",
            "IsCustomizable": BMP,
            "IsDataSourceSecret": "Edm.Boolean",
            "IsFilterable": "Edm.Boolean",
            "IsGlobalFilterEnabled": BMP,
            "IsLogical": "Edm.Boolean",
            "IsManaged": "Edm.Boolean",
            "IsPrimaryId": "Edm.Boolean",
            "IsPrimaryName": "Edm.Boolean",
            "IsRenameable": BMP,
            "IsRequiredForForm": "Edm.Boolean",
            "IsRetrievable": "Edm.Boolean",
            "IsSearchable": "Edm.Boolean",
            "IsSecured": "Edm.Boolean",
            "IsSortableEnabled": BMP,
            "IsValidForAdvancedFind": BMP,
            "IsValidForCreate": "Edm.Boolean",
            "IsValidForForm": "Edm.Boolean",
            "IsValidForGrid": "Edm.Boolean",
            "IsValidForRead": "Edm.Boolean",
            "IsValidForUpdate": "Edm.Boolean",
            "IsValidODataAttribute": "Edm.Boolean",  # P
            "LinkedAttributeId": "Edm.Guid",
            "LogicalName": "Edm.String",
            "ModifiedOn": "Edm.DateTimeOffset",  # P; Edm type inferred from CreatedOn
            "RequiredLevel": "AttributeRequiredLevelManagedProperty",
            "SchemaName": "Edm.String",
            # P ("Settings": []); element type inferred from the SDK's `EntitySetting[] Settings`.
            "Settings": "Collection(EntitySetting)",
            "SourceType": "Edm.Int32",
        },
    ),
    # {CE}/bigintattributemetadata.md@32235414.
    _t("BigIntAttributeMetadata", "AttributeMetadata", {"MaxValue": "Edm.Int64", "MinValue": "Edm.Int64"}),
    # {CE}/booleanattributemetadata.md@1feccf77: OptionSet/GlobalOptionSet are BooleanOptionSetMetadata here.
    _t(
        "BooleanAttributeMetadata",
        "AttributeMetadata",
        {"DefaultValue": "Edm.Boolean", "FormulaDefinition": "Edm.String", "SourceTypeMask": "Edm.Int32"},
        {"GlobalOptionSet": "BooleanOptionSetMetadata", "OptionSet": "BooleanOptionSetMetadata"},
    ),
    # {CE}/datetimeattributemetadata.md@1feccf77.
    _t(
        "DateTimeAttributeMetadata",
        "AttributeMetadata",
        {
            "CanChangeDateTimeBehavior": BMP,
            "DateTimeBehavior": "DateTimeBehavior",
            "Format": "DateTimeFormat",
            "FormulaDefinition": "Edm.String",
            "ImeMode": "ImeMode",
            "MaxSupportedValue": "Edm.DateTimeOffset",
            "MinSupportedValue": "Edm.DateTimeOffset",
            "SourceTypeMask": "Edm.Int32",
        },
    ),
    # {CE}/decimalattributemetadata.md@76db54f1.
    _t(
        "DecimalAttributeMetadata",
        "AttributeMetadata",
        {
            "FormulaDefinition": "Edm.String",
            "ImeMode": "ImeMode",
            "MaxValue": "Edm.Decimal",
            "MinValue": "Edm.Decimal",
            "Precision": "Edm.Int32",
            "SourceTypeMask": "Edm.Int32",
        },
    ),
    # {CE}/doubleattributemetadata.md@32235414.
    _t(
        "DoubleAttributeMetadata",
        "AttributeMetadata",
        {"ImeMode": "ImeMode", "MaxValue": "Edm.Double", "MinValue": "Edm.Double", "Precision": "Edm.Int32"},
    ),
    # {CE}/enumattributemetadata.md@a65b3bc9: the navigation is declared here, yet query-metadata-web-api.md says
    # "you cannot cast the attributes to this type" (see NOT_CASTABLE).
    _t(
        "EnumAttributeMetadata",
        "AttributeMetadata",
        {"DefaultFormValue": "Edm.Int32"},
        {"GlobalOptionSet": "OptionSetMetadata", "OptionSet": "OptionSetMetadata"},
    ),
    # {CE}/entitynameattributemetadata.md@09b7f683 lists no own property; IsEntityReferenceStored is from
    # {SAMPLES}/EntityNameAttributeMetadata.cs@f098e0b0 (Edm type inferred from `bool`).
    _t("EntityNameAttributeMetadata", "EnumAttributeMetadata", {"IsEntityReferenceStored": "Edm.Boolean"}),
    # Not in the 2017 reference; {SAMPLES}/FileAttributeMetadata.cs@f098e0b0 (`: AttributeMetadata`, `int MaxSizeInKB`),
    # listed as FileAttributeMetadata on learn.microsoft.com/.../webapi/reference/metadataentitytypes.
    _t("FileAttributeMetadata", "AttributeMetadata", {"MaxSizeInKB": "Edm.Int32"}),
    # {CE}/imageattributemetadata.md@32235414; CanStoreFullImage and MaxSizeInKB from
    # {SAMPLES}/ImageAttributeMetadata.cs@f098e0b0 (Edm types inferred).
    _t(
        "ImageAttributeMetadata",
        "AttributeMetadata",
        {
            "CanStoreFullImage": "Edm.Boolean",
            "IsPrimaryImage": "Edm.Boolean",
            "MaxHeight": "Edm.Int16",
            "MaxSizeInKB": "Edm.Int32",
            "MaxWidth": "Edm.Int16",
        },
    ),
    # {CE}/integerattributemetadata.md@38b53f2b.
    _t(
        "IntegerAttributeMetadata",
        "AttributeMetadata",
        {
            "Format": "IntegerFormat",
            "FormulaDefinition": "Edm.String",
            "MaxValue": "Edm.Int32",
            "MinValue": "Edm.Int32",
            "SourceTypeMask": "Edm.Int32",
        },
    ),
    # {CE}/lookupattributemetadata.md@50950770 ("Has no single-valued navigation properties").
    _t("LookupAttributeMetadata", "AttributeMetadata", {"Format": "LookupFormat", "Targets": "Collection(Edm.String)"}),
    # {CE}/managedpropertyattributemetadata.md@50950770.
    _t(
        "ManagedPropertyAttributeMetadata",
        "AttributeMetadata",
        {
            "ManagedPropertyLogicalName": "Edm.String",
            "ParentAttributeName": "Edm.String",
            "ParentComponentType": "Edm.Int32",
            "ValueAttributeTypeCode": "AttributeTypeCode",
        },
    ),
    # {CE}/memoattributemetadata.md@09b7f683.
    _t(
        "MemoAttributeMetadata",
        "AttributeMetadata",
        {"Format": "StringFormat", "ImeMode": "ImeMode", "IsLocalizable": "Edm.Boolean", "MaxLength": "Edm.Int32"},
    ),
    # {CE}/moneyattributemetadata.md@1feccf77.
    _t(
        "MoneyAttributeMetadata",
        "AttributeMetadata",
        {
            "CalculationOf": "Edm.String",
            "FormulaDefinition": "Edm.String",
            "ImeMode": "ImeMode",
            "IsBaseCurrency": "Edm.Boolean",
            "MaxValue": "Edm.Double",
            "MinValue": "Edm.Double",
            "Precision": "Edm.Int32",
            "PrecisionSource": "Edm.Int32",
            "SourceTypeMask": "Edm.Int32",
        },
    ),
    # {CE}/multiselectpicklistattributemetadata.md@09b7f683; ChildPicklistLogicalNames and ParentPicklistLogicalName
    # from {SAMPLES}/MultiSelectPicklistAttributeMetadata.cs@f098e0b0 (Edm types inferred).
    _t(
        "MultiSelectPicklistAttributeMetadata",
        "EnumAttributeMetadata",
        {
            "ChildPicklistLogicalNames": "Collection(Edm.String)",
            "FormulaDefinition": "Edm.String",
            "ParentPicklistLogicalName": "Edm.String",
            "SourceTypeMask": "Edm.Int32",
        },
    ),
    # {CE}/picklistattributemetadata.md@38b53f2b (OptionSet/GlobalOptionSet come from EnumAttributeMetadata).
    _t(
        "PicklistAttributeMetadata",
        "EnumAttributeMetadata",
        {"FormulaDefinition": "Edm.String", "SourceTypeMask": "Edm.Int32"},
    ),
    # {CE}/stateattributemetadata.md@a65b3bc9: no own property.
    _t("StateAttributeMetadata", "EnumAttributeMetadata", {}),
    # {CE}/statusattributemetadata.md@09b7f683: no own property.
    _t("StatusAttributeMetadata", "EnumAttributeMetadata", {}),
    # {CE}/stringattributemetadata.md@50950770.
    _t(
        "StringAttributeMetadata",
        "AttributeMetadata",
        {
            "DatabaseLength": "Edm.Int32",
            "Format": "StringFormat",
            "FormatName": "StringFormatName",
            "FormulaDefinition": "Edm.String",
            "ImeMode": "ImeMode",
            "IsLocalizable": "Edm.Boolean",
            "MaxLength": "Edm.Int32",
            "SourceTypeMask": "Edm.Int32",
            "YomiOf": "Edm.String",
        },
    ),
    # {CE}/uniqueidentifierattributemetadata.md@76db54f1: no own property.
    _t("UniqueIdentifierAttributeMetadata", "AttributeMetadata", {}),
    # {CE}/optionsetmetadatabase.md@38b53f2b (entity set GlobalOptionSetDefinitions); ExternalTypeName is in
    # {SAMPLES}/OptionSetMetadataBase.cs@f098e0b0 and on the learn.microsoft.com optionsetmetadata page.
    _t(
        "OptionSetMetadataBase",
        "MetadataBase",
        {
            "Description": "Label",
            "DisplayName": "Label",
            "ExternalName": "Edm.String",
            "ExternalTypeName": "Edm.String",
            "IntroducedVersion": "Edm.String",
            "IsCustomizable": BMP,
            "IsCustomOptionSet": "Edm.Boolean",
            "IsGlobal": "Edm.Boolean",
            "IsManaged": "Edm.Boolean",
            "Name": "Edm.String",
            "OptionSetType": "OptionSetType",
        },
    ),
    # {CE}/optionsetmetadata.md@76db54f1.
    _t("OptionSetMetadata", "OptionSetMetadataBase", {"Options": "Collection(OptionMetadata)"}),
    # {CE}/booleanoptionsetmetadata.md@09b7f683.
    _t(
        "BooleanOptionSetMetadata",
        "OptionSetMetadataBase",
        {"FalseOption": "OptionMetadata", "TrueOption": "OptionMetadata"},
    ),
    # {CE}/entitykeymetadata.md@32235414.
    _t(
        "EntityKeyMetadata",
        "MetadataBase",
        {
            "AsyncJob": "Edm.Guid",
            "DisplayName": "Label",
            "EntityKeyIndexStatus": "EntityKeyIndexStatus",
            "EntityLogicalName": "Edm.String",
            "IntroducedVersion": "Edm.String",
            "IsCustomizable": BMP,
            "IsManaged": "Edm.Boolean",
            "KeyAttributes": "Collection(Edm.String)",
            "LogicalName": "Edm.String",
            "SchemaName": "Edm.String",
        },
    ),
    # {CE}/relationshipmetadatabase.md@32235414 (entity set RelationshipDefinitions).
    _t(
        "RelationshipMetadataBase",
        "MetadataBase",
        {
            "IntroducedVersion": "Edm.String",
            "IsCustomizable": BMP,
            "IsCustomRelationship": "Edm.Boolean",
            "IsManaged": "Edm.Boolean",
            "IsValidForAdvancedFind": "Edm.Boolean",
            "RelationshipType": "RelationshipType",
            "SchemaName": "Edm.String",
            "SecurityTypes": "SecurityTypes",
        },
    ),
    # {CE}/onetomanyrelationshipmetadata.md@38b53f2b.
    _t(
        "OneToManyRelationshipMetadata",
        "RelationshipMetadataBase",
        {
            "AssociatedMenuConfiguration": "AssociatedMenuConfiguration",
            "CascadeConfiguration": "CascadeConfiguration",
            "IsHierarchical": "Edm.Boolean",
            "ReferencedAttribute": "Edm.String",
            "ReferencedEntity": "Edm.String",
            "ReferencedEntityNavigationPropertyName": "Edm.String",
            "ReferencingAttribute": "Edm.String",
            "ReferencingEntity": "Edm.String",
            "ReferencingEntityNavigationPropertyName": "Edm.String",
        },
        {"Lookup": "LookupAttributeMetadata"},
    ),
    # {CE}/manytomanyrelationshipmetadata.md@76db54f1.
    _t(
        "ManyToManyRelationshipMetadata",
        "RelationshipMetadataBase",
        {
            "Entity1AssociatedMenuConfiguration": "AssociatedMenuConfiguration",
            "Entity1IntersectAttribute": "Edm.String",
            "Entity1LogicalName": "Edm.String",
            "Entity1NavigationPropertyName": "Edm.String",
            "Entity2AssociatedMenuConfiguration": "AssociatedMenuConfiguration",
            "Entity2IntersectAttribute": "Edm.String",
            "Entity2LogicalName": "Edm.String",
            "Entity2NavigationPropertyName": "Edm.String",
            "IntersectEntityName": "Edm.String",
        },
    ),
    # learn.microsoft.com/en-us/previous-versions/dynamicscrm-2016/developers-guide/mt593049(v=crm.8) ("For internal
    # use only", entity set ManagedPropertyDefinitions); no stored repository copy was found.
    _t(
        "ManagedPropertyMetadata",
        "MetadataBase",
        {
            "Description": "Label",
            "DisplayName": "Label",
            "EnablesAttributeName": "Edm.String",
            "EnablesEntityName": "Edm.String",
            "ErrorCode": "Edm.Int32",
            "EvaluationPriority": "ManagedPropertyEvaluationPriority",
            "IntroducedVersion": "Edm.String",
            "IsGlobalForOperation": "Edm.Boolean",
            "IsPrivate": "Edm.Boolean",
            "LogicalName": "Edm.String",
            "ManagedPropertyType": "ManagedPropertyType",
            "Operation": "ManagedPropertyOperation",
        },
    ),
]

TYPES: dict[str, MetadataType] = {t.name: t for t in _LIST}

# powerapps-docs/developer/data-platform/webapi/use-web-api-metadata.md@22d815b0: the four metadata entity sets.
ENTITY_SETS: dict[str, str] = {
    "EntityDefinitions": "EntityMetadata",
    "RelationshipDefinitions": "RelationshipMetadataBase",
    "GlobalOptionSetDefinitions": "OptionSetMetadataBase",
    "ManagedPropertyDefinitions": "ManagedPropertyMetadata",
}

# query-metadata-web-api.md@0cc35097: OptionSet/GlobalOptionSet "are defined within EnumAttributeMetadata EntityType,
# you cannot cast the attributes to this type", so a `/Attributes/Microsoft.Dynamics.CRM.EnumAttributeMetadata`
# segment must be refused even though the type exists.
NOT_CASTABLE: frozenset[str] = frozenset({"EnumAttributeMetadata"})


def _chain(type_name: str) -> list[MetadataType]:
    # Root first, so a derived type's declaration wins if the reference ever repeats a name.
    chain: list[MetadataType] = []
    name: str | None = type_name
    while name is not None:
        if name not in TYPES:
            raise KeyError(f"unknown metadata type {name!r}")
        chain.append(TYPES[name])
        name = TYPES[name].base
    return chain[::-1]


def properties(type_name: str) -> dict[str, str]:
    """Own and inherited structural properties: what `$select` and `$filter` may name on this type."""
    out: dict[str, str] = {}
    for t in _chain(type_name):
        out.update(t.properties)
    return out


def navigation(type_name: str) -> frozenset[str]:
    """Own and inherited navigation properties: what `$expand` may name on this type."""
    return frozenset(n for t in _chain(type_name) for n in t.navigation)


def is_a(type_name: str, ancestor: str) -> bool:
    """Whether `type_name` is `ancestor` or derives from it, i.e. a cast to `type_name` narrows `ancestor`."""
    return any(t.name == ancestor for t in _chain(type_name))


# AttributeMetadata.AttributeType (AttributeTypeCode) -> the EntityType whose @odata.type an org serves.
# Documented source: powerapps-docs/developer/data-platform/entity-attribute-metadata.md@0b6926b5, table "Column
# types" (AttributeTypeDisplayName -> AttributeMetadata class), plus its note that AttributeType "shows
# ImageAttributeMetadata and MultiSelectPicklistAttributeMetadata as Virtual". The BooleanAttributeMetadata payload
# in {PAYLOAD} pairs "AttributeType": "Boolean" with that cast.
METADATA_TYPE_OF_ATTRIBUTE: dict[str, str] = {
    "BigInt": "BigIntAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "Customer": "LookupAttributeMetadata",  # CustomerType -> LookupAttributeMetadata in the table
    "DateTime": "DateTimeAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Double": "DoubleAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "ManagedProperty": "ManagedPropertyAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "Owner": "LookupAttributeMetadata",  # OwnerType -> LookupAttributeMetadata in the table
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "String": "StringAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    # Inferred: the table gives PartyListType no class; activity party lists are lookups to several tables.
    "PartyList": "LookupAttributeMetadata",
    # Inferred: the doc says "There are no columns that use this type"; the base type is the only safe answer.
    "CalendarRules": "AttributeMetadata",
    # Inferred for true virtual columns (VirtualType has no class in the table); Image, MultiSelectPicklist and
    # (per the samples) File columns also report Virtual, so use METADATA_TYPE_OF_ATTRIBUTE_TYPE_NAME when known.
    "Virtual": "AttributeMetadata",
}

# AttributeTypeName.Value -> EntityType, straight from the entity-attribute-metadata.md@0b6926b5 table; the three
# names it lists without a class (CalendarRulesType, PartyListType, VirtualType) are left out on purpose.
METADATA_TYPE_OF_ATTRIBUTE_TYPE_NAME: dict[str, str] = {
    "BigIntType": "BigIntAttributeMetadata",
    "BooleanType": "BooleanAttributeMetadata",
    "CustomerType": "LookupAttributeMetadata",
    "DateTimeType": "DateTimeAttributeMetadata",
    "DecimalType": "DecimalAttributeMetadata",
    "DoubleType": "DoubleAttributeMetadata",
    "EntityNameType": "EntityNameAttributeMetadata",
    "FileType": "FileAttributeMetadata",
    "ImageType": "ImageAttributeMetadata",
    "IntegerType": "IntegerAttributeMetadata",
    "LookupType": "LookupAttributeMetadata",
    "ManagedPropertyType": "ManagedPropertyAttributeMetadata",
    "MemoType": "MemoAttributeMetadata",
    "MoneyType": "MoneyAttributeMetadata",
    "MultiSelectPicklistType": "MultiSelectPicklistAttributeMetadata",
    "OwnerType": "LookupAttributeMetadata",
    "PicklistType": "PicklistAttributeMetadata",
    "StateType": "StateAttributeMetadata",
    "StatusType": "StatusAttributeMetadata",
    "StringType": "StringAttributeMetadata",
    "UniqueidentifierType": "UniqueIdentifierAttributeMetadata",
}
