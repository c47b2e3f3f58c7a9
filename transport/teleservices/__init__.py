"""The Assurance Maladie téléservices family: contexts, assertion PS, the téléservices client, and
INSi (search by traits, by carte Vitale, in batch)."""
