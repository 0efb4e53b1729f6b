// Live updates: task events from the taskEvents subscription are written into Apollo's
// normalized cache (Task:<id>), so every view showing that task moves at once. Lists are
// read again only when a task they do not hold shows up (debounced); the few fields an event
// does not carry (attempt, error, queue positions) are read again, per task or per entity,
// after status changes only.
import { useEffect, useRef } from 'react';
import type { ApolloClient, Reference } from '@apollo/client';
import { useApolloClient } from '@apollo/client/react';
import type { EventFieldsFragment, TaskEventsSubscriptionVariables } from '../gql/graphql';
import {
  ArtifactFields,
  QueuePositionsQuery,
  TaskEventsPageQuery,
  TaskEventsSubscription,
  TaskKnown,
  TaskRefreshQuery,
} from './documents';
import { onConnectionClosed } from './connection';

export type TaskEvent = EventFieldsFragment;

type StepObject = NonNullable<TaskEvent['step']> & { __typename?: 'TaskStep' };
const FINAL_KINDS = new Set<TaskEvent['kind']>(['COMPLETED', 'FAILED', 'CANCELLED']);

type TaskEntity = {
  finishedAt: string | null;
  startedAt: string | null;
  status: TaskEvent['status'];
  progress: number;
  updatedAt: string;
  queuePosition: number | null;
  steps: StepObject[];
  artifacts: Reference[];
};

/** The highest event sequence written into the cache, per task: events are applied in order
 * and at most once, whichever view (feed, task page, project) received them. */
const appliedSequence = new Map<string, number>();

/** The last events written into the cache, per task (to bring stale snapshots up to date). */
const recentEvents = new Map<string, TaskEvent[]>();
const RECENT = 400;

function remember(event: TaskEvent) {
  let list = recentEvents.get(event.taskId);
  if (!list) recentEvents.set(event.taskId, (list = []));
  list.push(event);
  if (list.length > RECENT) list.splice(0, list.length - RECENT);
}

/** An ISO-8601 instant as microseconds (Date.parse keeps only milliseconds). */
export function instant(iso: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(iso);
  if (!m) return Date.parse(iso) * 1000;
  const micros = Number(((m[2] ?? '') + '000000').slice(0, 6));
  return Date.parse(m[1] + (m[3] || 'Z')) * 1000 + micros;
}

type TaskSnapshot = {
  __typename?: string;
  id?: string;
  updatedAt?: string;
  status?: string;
  progress?: number;
  queuePosition?: number | null;
  steps?: { index: number }[];
};

/**
 * A query result is a snapshot of the moment the server read it; events that happened after
 * that moment may have reached the cache already, over the WebSocket, before the response.
 * Every task in a result whose updatedAt (the time of its last event) is older than events
 * held here gets those events applied on top, so a late response never takes a task back.
 */
export function bringUpToDate(value: unknown): void {
  if (Array.isArray(value)) {
    value.forEach(bringUpToDate);
    return;
  }
  if (!value || typeof value !== 'object') return;
  const obj = value as Record<string, unknown>;
  Object.values(obj).forEach(bringUpToDate);
  const task = obj as TaskSnapshot;
  if (task.__typename !== 'Task' || !task.id || !task.updatedAt) return;
  const events = recentEvents.get(task.id);
  if (!events?.length) return;
  // updatedAt is the time of the task's last event; the sequence of the snapshot is that of the
  // last event up to that time. (Not simply "events after updatedAt": an event's `at` is not
  // monotonic in its sequence within one server transaction, e.g. STEP_FAILED, then FAILED
  // stamped a few microseconds earlier.)
  const taken = instant(task.updatedAt);
  let seen = 0;
  for (const e of events) if (e.sequence > seen && instant(e.at) <= taken) seen = e.sequence;
  const newer = events.filter((e) => e.sequence > seen);
  if (!newer.length) return;
  for (const e of newer) {
    if ('status' in task) task.status = e.status;
    if ('progress' in task) task.progress = e.progress;
    if ('queuePosition' in task && e.status !== 'QUEUED') task.queuePosition = null;
    if (e.step && Array.isArray(task.steps)) {
      const step = e.step;
      task.steps = task.steps.map((s) => (s.index === step.index ? { ...s, ...step } : s));
    }
    task.updatedAt = e.at;
  }
}

const STATUS_KINDS = new Set<TaskEvent['kind']>([
  'QUEUED',
  'STARTED',
  'RETRY_SCHEDULED',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
]);

export function isTaskCached(client: ApolloClient, taskId: string): boolean {
  const id = client.cache.identify({ __typename: 'Task', id: taskId });
  if (!id) return false;
  return client.cache.readFragment({ id, fragment: TaskKnown }) != null;
}

/** Write one event into the cache. Returns false when the task is not in the cache. */
export function applyTaskEvent(client: ApolloClient, event: TaskEvent): boolean {
  const cache = client.cache;
  const id = cache.identify({ __typename: 'Task', id: event.taskId });
  if (!id || cache.readFragment({ id, fragment: TaskKnown }) == null) return false;
  if (event.sequence <= (appliedSequence.get(event.taskId) ?? 0)) return true;
  appliedSequence.set(event.taskId, event.sequence);
  remember(event);

  let artifactRef: Reference | undefined;
  if (event.artifact) {
    artifactRef = cache.writeFragment({
      fragment: ArtifactFields,
      data: { __typename: 'Artifact', ...event.artifact } as TaskEvent['artifact'] & object,
    });
  }
  const step = event.step;
  let stepMissing = false;
  cache.modify<TaskEntity>({
    id,
    fields: {
      status: () => event.status,
      progress: () => event.progress,
      updatedAt: () => event.at,
      queuePosition: (current: number | null) => (event.status === 'QUEUED' ? current : null),
      // The exact times come with the refresh that follows a status change.
      finishedAt: (current: string | null) =>
        FINAL_KINDS.has(event.kind) ? (current ?? event.at) : event.kind === 'QUEUED' ? null : current,
      startedAt: (current: string | null) => (event.kind === 'STARTED' ? (current ?? event.at) : current),
      steps: (existing, { readField }) => {
        if (!step) return existing;
        const indexOf = (s: (typeof existing)[number]) => readField<number>('index', s);
        if (!existing.some((s) => indexOf(s) === step.index)) {
          stepMissing = true; // a new plan (after a retry): read the task again
          return existing;
        }
        return existing.map((s) => (indexOf(s) === step.index ? { ...(s as StepObject), ...step } : s));
      },
      artifacts: (existing, { readField }) => {
        if (!artifactRef || !event.artifact) return existing;
        if (existing.some((ref) => readField('id', ref) === event.artifact!.id)) return existing;
        return [...existing, artifactRef];
      },
    },
  });
  if (STATUS_KINDS.has(event.kind) || stepMissing) {
    refreshTaskSoon(client, event.taskId);
    refreshQueueSoon(client, event.entityId);
  }
  return true;
}

export function noteAppliedSequence(taskId: string, sequence: number) {
  if (sequence > (appliedSequence.get(taskId) ?? 0)) appliedSequence.set(taskId, sequence);
}

/** Entities whose queue moved while one of their tasks was not in the cache yet: their queue
 * positions are read again once the list that will hold those tasks has been read. */
const dirtyQueues = new Set<string>();

function refreshDirtyQueues(client: ApolloClient) {
  dirtyQueues.forEach((entityId) => refreshQueueSoon(client, entityId));
  dirtyQueues.clear();
}

/** Read a list again once after a burst of calls (a task it does not hold appeared). */
export function useListRefetch(refetch: () => Promise<unknown>, delay = 400): () => void {
  const client = useApolloClient();
  return useCoalesced(() => {
    refetch()
      .catch(() => undefined)
      .finally(() => refreshDirtyQueues(client));
  }, delay);
}

const taskTimers = new Map<string, ReturnType<typeof setTimeout>>();
const queueTimers = new Map<string, ReturnType<typeof setTimeout>>();

function refreshTaskSoon(client: ApolloClient, taskId: string) {
  if (taskTimers.has(taskId)) return;
  taskTimers.set(
    taskId,
    setTimeout(() => {
      taskTimers.delete(taskId);
      client
        .query({ query: TaskRefreshQuery, variables: { id: taskId }, fetchPolicy: 'network-only' })
        .catch(() => undefined);
    }, 250),
  );
}

function refreshQueueSoon(client: ApolloClient, entityId: string) {
  if (queueTimers.has(entityId)) return;
  queueTimers.set(
    entityId,
    setTimeout(() => {
      queueTimers.delete(entityId);
      client
        .query({ query: QueuePositionsQuery, variables: { entityId }, fetchPolicy: 'network-only' })
        .catch(() => undefined);
    }, 300),
  );
}

/** A function that calls `fn` once, `delay` ms after the first of a burst of calls. */
export function useCoalesced(fn: () => void, delay = 400): () => void {
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(
    () => () => {
      if (timer.current) clearTimeout(timer.current);
    },
    [],
  );
  const schedule = useRef(() => {
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      fnRef.current();
    }, delay);
  });
  return schedule.current;
}

/**
 * Subscribe to taskEvents with the given arguments and call `onEvent` for each event, after it
 * was written into the cache (`known` says whether the task was in the cache).
 * A stream that ends with an error (the server went down, or the subscriber fell behind) is
 * started again after a second; graphql-ws itself resubscribes after a reconnect.
 */
export function useTaskEvents(
  variables: TaskEventsSubscriptionVariables,
  onEvent: (event: TaskEvent, known: boolean) => void,
  { enabled = true, onGap }: { enabled?: boolean; onGap?: () => void } = {},
) {
  const onGapRef = useRef(onGap);
  onGapRef.current = onGap;
  const client = useApolloClient();
  const onEventRef = useRef(onEvent);
  onEventRef.current = onEvent;
  const key = JSON.stringify(variables);
  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let subscription: { unsubscribe(): void } | undefined;
    // Events may have been missed: read the lists again, and listen again in a second.
    const restart = () => {
      subscription?.unsubscribe();
      subscription = undefined;
      if (stopped || retry) return;
      onGapRef.current?.();
      retry = setTimeout(() => {
        retry = undefined;
        start();
      }, 1000);
    };
    const start = () => {
      subscription = client
        .subscribe({ query: TaskEventsSubscription, variables: JSON.parse(key), fetchPolicy: 'no-cache' })
        .subscribe({
          next: (result) => {
            const event = result.data?.taskEvents;
            if (event) {
              const known = applyTaskEvent(client, event);
              if (!known && STATUS_KINDS.has(event.kind)) dirtyQueues.add(event.entityId);
              onEventRef.current(event, known);
            } else if (result.error) restart();
          },
          error: () => restart(),
        });
    };
    start();
    return () => {
      stopped = true;
      if (retry) clearTimeout(retry);
      subscription?.unsubscribe();
    };
  }, [client, key, enabled]);
}

/**
 * The event stream of one task, for its page: the stored events first (paged), then
 * taskEvents(taskId, afterSequence: <last sequence held>). When the socket closes, the stream
 * is started again with the last sequence held, so after a reconnect the server replays
 * exactly what was missed. `onEvents` gets each new event once, in sequence order.
 */
export function useTaskStream(
  taskId: string,
  ready: boolean,
  live: boolean,
  onEvents: (events: TaskEvent[]) => void,
): void {
  const client = useApolloClient();
  const onEventsRef = useRef(onEvents);
  onEventsRef.current = onEvents;
  const held = useRef({ taskId, lastSequence: 0 });
  if (held.current.taskId !== taskId) held.current = { taskId, lastSequence: 0 };

  useEffect(() => {
    // Events are written into the cached task: nothing to do before the task is there.
    if (!ready) return;
    let stopped = false;
    let subscription: { unsubscribe(): void } | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const state = held.current;

    const deliver = (events: readonly TaskEvent[]) => {
      const fresh = events.filter((e) => e.sequence > state.lastSequence);
      if (stopped || !fresh.length) return;
      state.lastSequence = fresh[fresh.length - 1].sequence;
      client.cache.batch({
        update: () => {
          fresh.forEach((e) => applyTaskEvent(client, e));
        },
      });
      onEventsRef.current(fresh);
    };

    const loadStored = async () => {
      const first = 200;
      for (;;) {
        const { data } = await client.query({
          query: TaskEventsPageQuery,
          variables: { id: taskId, after: state.lastSequence, first },
          fetchPolicy: 'no-cache',
        });
        const events = data?.task?.events ?? [];
        deliver(events);
        if (stopped || events.length < first) return;
      }
    };

    const subscribe = () => {
      subscription?.unsubscribe();
      subscription = undefined;
      if (stopped) return;
      subscription = client
        .subscribe({
          query: TaskEventsSubscription,
          variables: { taskId, afterSequence: state.lastSequence },
          fetchPolicy: 'no-cache',
        })
        .subscribe({
          next: (result) => {
            const event = result.data?.taskEvents;
            if (event) deliver([event]);
            else if (result.error) restartSoon();
          },
          error: () => restartSoon(),
        });
    };

    const restartSoon = () => {
      subscription?.unsubscribe();
      subscription = undefined;
      if (stopped || retry) return;
      retry = setTimeout(() => {
        retry = undefined;
        subscribe();
      }, 1000);
    };

    // The socket closed: drop the stream now (graphql-ws would replay it with the sequence it
    // was started with) and ask again from the last sequence held; the request goes out as
    // soon as the socket is connected again.
    const offClosed = onConnectionClosed(() => {
      if (live && !stopped) subscribe();
    });

    loadStored()
      .catch(() => undefined)
      .then(() => {
        if (live) subscribe();
      });

    return () => {
      stopped = true;
      offClosed();
      if (retry) clearTimeout(retry);
      subscription?.unsubscribe();
    };
  }, [client, taskId, ready, live]);
}
