"""One view class per page, each over its view-model."""
