import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { OperationTypeNode } from 'graphql';
import { map } from 'rxjs';
import { onReconnected, wsClient } from './connection';
import { bringUpToDate } from './live';
import { graphqlHttpUrl } from './urls';

const httpLink = new HttpLink({ uri: graphqlHttpUrl() });

// Query and mutation results are snapshots: never let one take a task back behind the events
// the cache already has (see bringUpToDate).
const freshness = new ApolloLink((operation, forward) =>
  forward(operation).pipe(
    map((result) => {
      bringUpToDate(result.data);
      return result;
    }),
  ),
);
const wsLink = new GraphQLWsLink(wsClient);

export const cache = new InMemoryCache({
  typePolicies: {
    Task: {
      fields: {
        // Both lists are replaced whole (from a query or from a subscription event).
        steps: { merge: false },
        artifacts: { merge: false },
      },
    },
    Project: { fields: { environments: { merge: false } } },
    TaskStep: { keyFields: false },
  },
});

export const client = new ApolloClient({
  link: ApolloLink.split(
    (op) => op.operationType === OperationTypeNode.SUBSCRIPTION,
    wsLink,
    ApolloLink.from([freshness, httpLink]),
  ),
  cache,
  defaultOptions: {
    // A page shows what the cache has at once and reads it again once when it is opened:
    // events that happened while it was not on screen were not listened to.
    watchQuery: { fetchPolicy: 'cache-and-network', nextFetchPolicy: 'cache-first' },
  },
});

// Whatever changed while the socket was down (status changes, new tasks) is read again once,
// by the queries on screen; the task pages resume their streams from their last sequence.
onReconnected(() => {
  void client.refetchQueries({ include: 'active' });
});
