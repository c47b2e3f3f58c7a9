"""The DMP (Dossier Médical Partagé) service family: the client of every LPS transaction and the
messages it exchanges (HL7v3 patients, authorizations, XDS.b registry and repository, XAdES)."""
