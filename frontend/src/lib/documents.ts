// Every GraphQL document of the dashboard. `npm run codegen` turns them into typed
// documents in src/gql/ (GraphQL Code Generator, client preset) from ../schema.graphql.
import { graphql } from '../gql';

export const TaskSummaryFields = graphql(`
  fragment TaskSummaryFields on Task {
    id
    type
    status
    entityId
    attempt
    maxAttempts
    progress
    queuePosition
    deadLettered
    cancelRequested
    error
    runAfter
    createdAt
    updatedAt
    startedAt
    finishedAt
    project {
      id
      name
    }
    environment {
      id
      name
    }
  }
`);

export const StepFields = graphql(`
  fragment StepFields on TaskStep {
    index
    name
    status
    progress
    message
    startedAt
    finishedAt
  }
`);

export const ArtifactFields = graphql(`
  fragment ArtifactFields on Artifact {
    id
    kind
    path
    sizeBytes
    sha256
    createdAt
    url
    taskId
  }
`);

export const EventFields = graphql(`
  fragment EventFields on TaskEvent {
    id
    taskId
    sequence
    kind
    at
    status
    progress
    entityId
    type
    message
    step {
      ...StepFields
    }
    artifact {
      ...ArtifactFields
    }
  }
`);

export const UserErrorFields = graphql(`
  fragment UserErrorFields on UserError {
    field
    message
    code
  }
`);

/** Used to tell whether a task is in the cache already. */
export const TaskKnown = graphql(`
  fragment TaskKnown on Task {
    id
    status
    entityId
  }
`);

export const HealthQuery = graphql(`
  query Health {
    health {
      status
      version
      database
      bus
      broadcast
      broadcastConnected
      queuedTasks
      runningTasks
    }
    viewer {
      id
      name
      role
    }
  }
`);

export const TasksQuery = graphql(`
  query Tasks($first: Int, $filter: TaskFilter) {
    tasks(first: $first, filter: $filter) {
      totalCount
      pageInfo {
        hasNextPage
        endCursor
      }
      edges {
        node {
          ...TaskSummaryFields
        }
      }
    }
  }
`);

export const TaskDetailQuery = graphql(`
  query TaskDetail($id: ID!) {
    task(id: $id) {
      ...TaskSummaryFields
      correlationId
      idempotencyKey
      input
      metadata
      steps {
        ...StepFields
      }
      artifacts {
        ...ArtifactFields
      }
    }
  }
`);

export const TaskEventsPageQuery = graphql(`
  query TaskEventsPage($id: ID!, $after: Int!, $first: Int!) {
    task(id: $id) {
      id
      events(afterSequence: $after, first: $first) {
        ...EventFields
      }
    }
  }
`);

/** What a status change may have changed besides status and progress (attempt, error, times,
 * a fresh plan after a retry). */
export const TaskRefreshQuery = graphql(`
  query TaskRefresh($id: ID!) {
    task(id: $id) {
      ...TaskSummaryFields
      steps {
        ...StepFields
      }
      artifacts {
        ...ArtifactFields
      }
    }
  }
`);

/** Queue positions only (no status: a late answer must not undo a status change). */
export const QueuePositionsQuery = graphql(`
  query QueuePositions($entityId: String!) {
    tasks(first: 200, filter: { entityId: $entityId, status: [QUEUED] }) {
      edges {
        node {
          id
          queuePosition
          runAfter
          updatedAt
        }
      }
    }
  }
`);

export const TaskEventsSubscription = graphql(`
  subscription TaskEvents($taskId: ID, $entityId: String, $projectId: ID, $afterSequence: Int) {
    taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId, afterSequence: $afterSequence) {
      ...EventFields
    }
  }
`);

export const ProjectsQuery = graphql(`
  query Projects {
    projects(first: 200) {
      totalCount
      edges {
        node {
          id
          name
          description
          createdAt
          environments {
            id
            name
            type
            currentVersion
            expired
          }
        }
      }
    }
  }
`);

export const EnvironmentFields = graphql(`
  fragment EnvironmentFields on Environment {
    id
    name
    type
    ttlMinutes
    expiresAt
    expired
    currentVersion
    createdAt
    tasks(first: 10) {
      totalCount
      edges {
        node {
          ...TaskSummaryFields
        }
      }
    }
  }
`);

export const ProjectQuery = graphql(`
  query Project($id: ID!) {
    project(id: $id) {
      id
      name
      description
      teamsWebhookUrl
      emailRecipients
      createdAt
      environments {
        ...EnvironmentFields
      }
    }
  }
`);

export const CreateProjectMutation = graphql(`
  mutation CreateProject($input: CreateProjectInput!) {
    createProject(input: $input) {
      project {
        id
        name
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const CreateEnvironmentMutation = graphql(`
  mutation CreateEnvironment($input: CreateEnvironmentInput!) {
    createEnvironment(input: $input) {
      environment {
        id
        name
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const DeployMutation = graphql(`
  mutation Deploy($input: DeployInput!) {
    deploy(input: $input) {
      task {
        ...TaskSummaryFields
      }
      deduplicated
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const CreateSandboxMutation = graphql(`
  mutation CreateSandbox($input: CreateSandboxInput!) {
    createSandbox(input: $input) {
      task {
        ...TaskSummaryFields
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const BackupDatabaseMutation = graphql(`
  mutation BackupDatabase($input: BackupDatabaseInput!) {
    backupDatabase(input: $input) {
      task {
        ...TaskSummaryFields
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const RestoreDatabaseMutation = graphql(`
  mutation RestoreDatabase($input: RestoreDatabaseInput!) {
    restoreDatabase(input: $input) {
      task {
        ...TaskSummaryFields
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const RestartWorkloadMutation = graphql(`
  mutation RestartWorkload($input: RestartWorkloadInput!) {
    restartWorkload(input: $input) {
      task {
        ...TaskSummaryFields
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const BackupsQuery = graphql(`
  query Backups($entityId: String!) {
    tasks(first: 50, filter: { entityId: $entityId, type: [DB_BACKUP], status: [COMPLETED] }) {
      edges {
        node {
          id
          createdAt
          artifacts {
            ...ArtifactFields
          }
        }
      }
    }
  }
`);

export const CancelTaskMutation = graphql(`
  mutation CancelTask($id: ID!) {
    cancelTask(id: $id) {
      task {
        ...TaskSummaryFields
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);

export const RetryTaskMutation = graphql(`
  mutation RetryTask($id: ID!) {
    retryTask(id: $id) {
      task {
        ...TaskSummaryFields
        steps {
          ...StepFields
        }
        artifacts {
          ...ArtifactFields
        }
      }
      userErrors {
        ...UserErrorFields
      }
    }
  }
`);
