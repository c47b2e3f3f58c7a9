"""Service facades and the messages they exchange (DMP, XDS.b, HL7v3, téléservices)."""
