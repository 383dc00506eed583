"""The validating ingest service other services publish through (``service``), its typed client
(``client``), the JSON-lines publisher behind ``dsctl events publish`` (``publish``) and the printed
contract (``contract``; the documents themselves are pure, in ``events.schema`` and ``events.asyncapi``)."""
