// The dashboard is served by the API itself, so everything is same-origin: the WebSocket
// URL is derived from the page's own location (wss:// behind TLS).
export function graphqlHttpUrl(): string {
  return new URL('/graphql', window.location.href).toString();
}

export function graphqlWsUrl(): string {
  const url = new URL('/graphql', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}
