// GraphiQL from our own bundle (the `graphiql` npm package), so the explorer works with no
// internet. The API serves this page to browsers at GET /graphql; queries and mutations go
// over HTTP, subscriptions over the same origin's WebSocket (graphql-transport-ws).
import './workers';
import 'graphiql/style.css';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { graphqlHttpUrl, graphqlWsUrl } from '../lib/urls';

const fetcher = createGraphiQLFetcher({
  url: graphqlHttpUrl(),
  subscriptionUrl: graphqlWsUrl(),
});

const defaultQuery = `# CloudOps control plane API (schema in the Docs pane).
query Overview {
  health {
    status
    version
    queuedTasks
    runningTasks
  }
  tasks(first: 5) {
    edges {
      node {
        id
        type
        status
        progress
        queuePosition
      }
    }
  }
}

# Subscriptions run over this page's WebSocket, e.g.
# subscription {
#   taskEvents { taskId sequence kind status progress message }
# }
`;

createRoot(document.getElementById('graphiql')!).render(
  <StrictMode>
    <GraphiQL fetcher={fetcher} defaultQuery={defaultQuery} />
  </StrictMode>,
);
