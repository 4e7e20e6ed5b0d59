"""Provider batch APIs behind one port (`batchor.providers.base`): each provider is a
transport (its API's calls) and a codec (its wire format), chosen by the type of the job's
provider config (`batchor.providers.registry`)."""
