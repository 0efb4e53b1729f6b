"""The GraphQL layer: the public contract (../shared/api-contract.graphql) in Strawberry."""
