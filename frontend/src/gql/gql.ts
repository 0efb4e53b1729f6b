/* eslint-disable */
import * as types from './graphql';
import type { TypedDocumentNode as DocumentNode } from '@graphql-typed-document-node/core';

/**
 * Map of all GraphQL operations in the project.
 *
 * This map has several performance disadvantages:
 * 1. It is not tree-shakeable, so it will include all operations in the project.
 * 2. It is not minifiable, so the string of a GraphQL query will be multiple times inside the bundle.
 * 3. It does not support dead code elimination, so it will add unused operations.
 *
 * Therefore it is highly recommended to use the babel or swc plugin for production.
 * Learn more about it here: https://the-guild.dev/graphql/codegen/plugins/presets/preset-client#reducing-bundle-size
 */
type Documents = {
    "\n  fragment TaskSummaryFields on Task {\n    id\n    type\n    status\n    entityId\n    attempt\n    maxAttempts\n    progress\n    queuePosition\n    deadLettered\n    cancelRequested\n    error\n    runAfter\n    createdAt\n    updatedAt\n    startedAt\n    finishedAt\n    project {\n      id\n      name\n    }\n    environment {\n      id\n      name\n    }\n  }\n": typeof types.TaskSummaryFieldsFragmentDoc,
    "\n  fragment StepFields on TaskStep {\n    index\n    name\n    status\n    progress\n    message\n    startedAt\n    finishedAt\n  }\n": typeof types.StepFieldsFragmentDoc,
    "\n  fragment ArtifactFields on Artifact {\n    id\n    kind\n    path\n    sizeBytes\n    sha256\n    createdAt\n    url\n    taskId\n  }\n": typeof types.ArtifactFieldsFragmentDoc,
    "\n  fragment EventFields on TaskEvent {\n    id\n    taskId\n    sequence\n    kind\n    at\n    status\n    progress\n    entityId\n    type\n    message\n    step {\n      ...StepFields\n    }\n    artifact {\n      ...ArtifactFields\n    }\n  }\n": typeof types.EventFieldsFragmentDoc,
    "\n  fragment UserErrorFields on UserError {\n    field\n    message\n    code\n  }\n": typeof types.UserErrorFieldsFragmentDoc,
    "\n  fragment TaskKnown on Task {\n    id\n    status\n    entityId\n  }\n": typeof types.TaskKnownFragmentDoc,
    "\n  query Health {\n    health {\n      status\n      version\n      database\n      bus\n      broadcast\n      broadcastConnected\n      queuedTasks\n      runningTasks\n    }\n    viewer {\n      id\n      name\n      role\n    }\n  }\n": typeof types.HealthDocument,
    "\n  query Tasks($first: Int, $filter: TaskFilter) {\n    tasks(first: $first, filter: $filter) {\n      totalCount\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n": typeof types.TasksDocument,
    "\n  query TaskDetail($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      correlationId\n      idempotencyKey\n      input\n      metadata\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n": typeof types.TaskDetailDocument,
    "\n  query TaskEventsPage($id: ID!, $after: Int!, $first: Int!) {\n    task(id: $id) {\n      id\n      events(afterSequence: $after, first: $first) {\n        ...EventFields\n      }\n    }\n  }\n": typeof types.TaskEventsPageDocument,
    "\n  query TaskRefresh($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n": typeof types.TaskRefreshDocument,
    "\n  query QueuePositions($entityId: String!) {\n    tasks(first: 200, filter: { entityId: $entityId, status: [QUEUED] }) {\n      edges {\n        node {\n          id\n          queuePosition\n          runAfter\n          updatedAt\n        }\n      }\n    }\n  }\n": typeof types.QueuePositionsDocument,
    "\n  subscription TaskEvents($taskId: ID, $entityId: String, $projectId: ID, $afterSequence: Int) {\n    taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId, afterSequence: $afterSequence) {\n      ...EventFields\n    }\n  }\n": typeof types.TaskEventsDocument,
    "\n  query Projects {\n    projects(first: 200) {\n      totalCount\n      edges {\n        node {\n          id\n          name\n          description\n          createdAt\n          environments {\n            id\n            name\n            type\n            currentVersion\n            expired\n          }\n        }\n      }\n    }\n  }\n": typeof types.ProjectsDocument,
    "\n  fragment EnvironmentFields on Environment {\n    id\n    name\n    type\n    ttlMinutes\n    expiresAt\n    expired\n    currentVersion\n    createdAt\n    tasks(first: 10) {\n      totalCount\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n": typeof types.EnvironmentFieldsFragmentDoc,
    "\n  query Project($id: ID!) {\n    project(id: $id) {\n      id\n      name\n      description\n      teamsWebhookUrl\n      emailRecipients\n      createdAt\n      environments {\n        ...EnvironmentFields\n      }\n    }\n  }\n": typeof types.ProjectDocument,
    "\n  mutation CreateProject($input: CreateProjectInput!) {\n    createProject(input: $input) {\n      project {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.CreateProjectDocument,
    "\n  mutation CreateEnvironment($input: CreateEnvironmentInput!) {\n    createEnvironment(input: $input) {\n      environment {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.CreateEnvironmentDocument,
    "\n  mutation Deploy($input: DeployInput!) {\n    deploy(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      deduplicated\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.DeployDocument,
    "\n  mutation CreateSandbox($input: CreateSandboxInput!) {\n    createSandbox(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.CreateSandboxDocument,
    "\n  mutation BackupDatabase($input: BackupDatabaseInput!) {\n    backupDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.BackupDatabaseDocument,
    "\n  mutation RestoreDatabase($input: RestoreDatabaseInput!) {\n    restoreDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.RestoreDatabaseDocument,
    "\n  mutation RestartWorkload($input: RestartWorkloadInput!) {\n    restartWorkload(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.RestartWorkloadDocument,
    "\n  query Backups($entityId: String!) {\n    tasks(first: 50, filter: { entityId: $entityId, type: [DB_BACKUP], status: [COMPLETED] }) {\n      edges {\n        node {\n          id\n          createdAt\n          artifacts {\n            ...ArtifactFields\n          }\n        }\n      }\n    }\n  }\n": typeof types.BackupsDocument,
    "\n  mutation CancelTask($id: ID!) {\n    cancelTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.CancelTaskDocument,
    "\n  mutation RetryTask($id: ID!) {\n    retryTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n        steps {\n          ...StepFields\n        }\n        artifacts {\n          ...ArtifactFields\n        }\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": typeof types.RetryTaskDocument,
};
const documents: Documents = {
    "\n  fragment TaskSummaryFields on Task {\n    id\n    type\n    status\n    entityId\n    attempt\n    maxAttempts\n    progress\n    queuePosition\n    deadLettered\n    cancelRequested\n    error\n    runAfter\n    createdAt\n    updatedAt\n    startedAt\n    finishedAt\n    project {\n      id\n      name\n    }\n    environment {\n      id\n      name\n    }\n  }\n": types.TaskSummaryFieldsFragmentDoc,
    "\n  fragment StepFields on TaskStep {\n    index\n    name\n    status\n    progress\n    message\n    startedAt\n    finishedAt\n  }\n": types.StepFieldsFragmentDoc,
    "\n  fragment ArtifactFields on Artifact {\n    id\n    kind\n    path\n    sizeBytes\n    sha256\n    createdAt\n    url\n    taskId\n  }\n": types.ArtifactFieldsFragmentDoc,
    "\n  fragment EventFields on TaskEvent {\n    id\n    taskId\n    sequence\n    kind\n    at\n    status\n    progress\n    entityId\n    type\n    message\n    step {\n      ...StepFields\n    }\n    artifact {\n      ...ArtifactFields\n    }\n  }\n": types.EventFieldsFragmentDoc,
    "\n  fragment UserErrorFields on UserError {\n    field\n    message\n    code\n  }\n": types.UserErrorFieldsFragmentDoc,
    "\n  fragment TaskKnown on Task {\n    id\n    status\n    entityId\n  }\n": types.TaskKnownFragmentDoc,
    "\n  query Health {\n    health {\n      status\n      version\n      database\n      bus\n      broadcast\n      broadcastConnected\n      queuedTasks\n      runningTasks\n    }\n    viewer {\n      id\n      name\n      role\n    }\n  }\n": types.HealthDocument,
    "\n  query Tasks($first: Int, $filter: TaskFilter) {\n    tasks(first: $first, filter: $filter) {\n      totalCount\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n": types.TasksDocument,
    "\n  query TaskDetail($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      correlationId\n      idempotencyKey\n      input\n      metadata\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n": types.TaskDetailDocument,
    "\n  query TaskEventsPage($id: ID!, $after: Int!, $first: Int!) {\n    task(id: $id) {\n      id\n      events(afterSequence: $after, first: $first) {\n        ...EventFields\n      }\n    }\n  }\n": types.TaskEventsPageDocument,
    "\n  query TaskRefresh($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n": types.TaskRefreshDocument,
    "\n  query QueuePositions($entityId: String!) {\n    tasks(first: 200, filter: { entityId: $entityId, status: [QUEUED] }) {\n      edges {\n        node {\n          id\n          queuePosition\n          runAfter\n          updatedAt\n        }\n      }\n    }\n  }\n": types.QueuePositionsDocument,
    "\n  subscription TaskEvents($taskId: ID, $entityId: String, $projectId: ID, $afterSequence: Int) {\n    taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId, afterSequence: $afterSequence) {\n      ...EventFields\n    }\n  }\n": types.TaskEventsDocument,
    "\n  query Projects {\n    projects(first: 200) {\n      totalCount\n      edges {\n        node {\n          id\n          name\n          description\n          createdAt\n          environments {\n            id\n            name\n            type\n            currentVersion\n            expired\n          }\n        }\n      }\n    }\n  }\n": types.ProjectsDocument,
    "\n  fragment EnvironmentFields on Environment {\n    id\n    name\n    type\n    ttlMinutes\n    expiresAt\n    expired\n    currentVersion\n    createdAt\n    tasks(first: 10) {\n      totalCount\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n": types.EnvironmentFieldsFragmentDoc,
    "\n  query Project($id: ID!) {\n    project(id: $id) {\n      id\n      name\n      description\n      teamsWebhookUrl\n      emailRecipients\n      createdAt\n      environments {\n        ...EnvironmentFields\n      }\n    }\n  }\n": types.ProjectDocument,
    "\n  mutation CreateProject($input: CreateProjectInput!) {\n    createProject(input: $input) {\n      project {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.CreateProjectDocument,
    "\n  mutation CreateEnvironment($input: CreateEnvironmentInput!) {\n    createEnvironment(input: $input) {\n      environment {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.CreateEnvironmentDocument,
    "\n  mutation Deploy($input: DeployInput!) {\n    deploy(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      deduplicated\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.DeployDocument,
    "\n  mutation CreateSandbox($input: CreateSandboxInput!) {\n    createSandbox(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.CreateSandboxDocument,
    "\n  mutation BackupDatabase($input: BackupDatabaseInput!) {\n    backupDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.BackupDatabaseDocument,
    "\n  mutation RestoreDatabase($input: RestoreDatabaseInput!) {\n    restoreDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.RestoreDatabaseDocument,
    "\n  mutation RestartWorkload($input: RestartWorkloadInput!) {\n    restartWorkload(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.RestartWorkloadDocument,
    "\n  query Backups($entityId: String!) {\n    tasks(first: 50, filter: { entityId: $entityId, type: [DB_BACKUP], status: [COMPLETED] }) {\n      edges {\n        node {\n          id\n          createdAt\n          artifacts {\n            ...ArtifactFields\n          }\n        }\n      }\n    }\n  }\n": types.BackupsDocument,
    "\n  mutation CancelTask($id: ID!) {\n    cancelTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.CancelTaskDocument,
    "\n  mutation RetryTask($id: ID!) {\n    retryTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n        steps {\n          ...StepFields\n        }\n        artifacts {\n          ...ArtifactFields\n        }\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n": types.RetryTaskDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 *
 *
 * @example
 * ```ts
 * const query = graphql(`query GetUser($id: ID!) { user(id: $id) { name } }`);
 * ```
 *
 * The query argument is unknown!
 * Please regenerate the types.
 */
export function graphql(source: string): unknown;

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment TaskSummaryFields on Task {\n    id\n    type\n    status\n    entityId\n    attempt\n    maxAttempts\n    progress\n    queuePosition\n    deadLettered\n    cancelRequested\n    error\n    runAfter\n    createdAt\n    updatedAt\n    startedAt\n    finishedAt\n    project {\n      id\n      name\n    }\n    environment {\n      id\n      name\n    }\n  }\n"): (typeof documents)["\n  fragment TaskSummaryFields on Task {\n    id\n    type\n    status\n    entityId\n    attempt\n    maxAttempts\n    progress\n    queuePosition\n    deadLettered\n    cancelRequested\n    error\n    runAfter\n    createdAt\n    updatedAt\n    startedAt\n    finishedAt\n    project {\n      id\n      name\n    }\n    environment {\n      id\n      name\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment StepFields on TaskStep {\n    index\n    name\n    status\n    progress\n    message\n    startedAt\n    finishedAt\n  }\n"): (typeof documents)["\n  fragment StepFields on TaskStep {\n    index\n    name\n    status\n    progress\n    message\n    startedAt\n    finishedAt\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment ArtifactFields on Artifact {\n    id\n    kind\n    path\n    sizeBytes\n    sha256\n    createdAt\n    url\n    taskId\n  }\n"): (typeof documents)["\n  fragment ArtifactFields on Artifact {\n    id\n    kind\n    path\n    sizeBytes\n    sha256\n    createdAt\n    url\n    taskId\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment EventFields on TaskEvent {\n    id\n    taskId\n    sequence\n    kind\n    at\n    status\n    progress\n    entityId\n    type\n    message\n    step {\n      ...StepFields\n    }\n    artifact {\n      ...ArtifactFields\n    }\n  }\n"): (typeof documents)["\n  fragment EventFields on TaskEvent {\n    id\n    taskId\n    sequence\n    kind\n    at\n    status\n    progress\n    entityId\n    type\n    message\n    step {\n      ...StepFields\n    }\n    artifact {\n      ...ArtifactFields\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment UserErrorFields on UserError {\n    field\n    message\n    code\n  }\n"): (typeof documents)["\n  fragment UserErrorFields on UserError {\n    field\n    message\n    code\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment TaskKnown on Task {\n    id\n    status\n    entityId\n  }\n"): (typeof documents)["\n  fragment TaskKnown on Task {\n    id\n    status\n    entityId\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Health {\n    health {\n      status\n      version\n      database\n      bus\n      broadcast\n      broadcastConnected\n      queuedTasks\n      runningTasks\n    }\n    viewer {\n      id\n      name\n      role\n    }\n  }\n"): (typeof documents)["\n  query Health {\n    health {\n      status\n      version\n      database\n      bus\n      broadcast\n      broadcastConnected\n      queuedTasks\n      runningTasks\n    }\n    viewer {\n      id\n      name\n      role\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Tasks($first: Int, $filter: TaskFilter) {\n    tasks(first: $first, filter: $filter) {\n      totalCount\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query Tasks($first: Int, $filter: TaskFilter) {\n    tasks(first: $first, filter: $filter) {\n      totalCount\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query TaskDetail($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      correlationId\n      idempotencyKey\n      input\n      metadata\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n"): (typeof documents)["\n  query TaskDetail($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      correlationId\n      idempotencyKey\n      input\n      metadata\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query TaskEventsPage($id: ID!, $after: Int!, $first: Int!) {\n    task(id: $id) {\n      id\n      events(afterSequence: $after, first: $first) {\n        ...EventFields\n      }\n    }\n  }\n"): (typeof documents)["\n  query TaskEventsPage($id: ID!, $after: Int!, $first: Int!) {\n    task(id: $id) {\n      id\n      events(afterSequence: $after, first: $first) {\n        ...EventFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query TaskRefresh($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n"): (typeof documents)["\n  query TaskRefresh($id: ID!) {\n    task(id: $id) {\n      ...TaskSummaryFields\n      steps {\n        ...StepFields\n      }\n      artifacts {\n        ...ArtifactFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query QueuePositions($entityId: String!) {\n    tasks(first: 200, filter: { entityId: $entityId, status: [QUEUED] }) {\n      edges {\n        node {\n          id\n          queuePosition\n          runAfter\n          updatedAt\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query QueuePositions($entityId: String!) {\n    tasks(first: 200, filter: { entityId: $entityId, status: [QUEUED] }) {\n      edges {\n        node {\n          id\n          queuePosition\n          runAfter\n          updatedAt\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription TaskEvents($taskId: ID, $entityId: String, $projectId: ID, $afterSequence: Int) {\n    taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId, afterSequence: $afterSequence) {\n      ...EventFields\n    }\n  }\n"): (typeof documents)["\n  subscription TaskEvents($taskId: ID, $entityId: String, $projectId: ID, $afterSequence: Int) {\n    taskEvents(taskId: $taskId, entityId: $entityId, projectId: $projectId, afterSequence: $afterSequence) {\n      ...EventFields\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Projects {\n    projects(first: 200) {\n      totalCount\n      edges {\n        node {\n          id\n          name\n          description\n          createdAt\n          environments {\n            id\n            name\n            type\n            currentVersion\n            expired\n          }\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query Projects {\n    projects(first: 200) {\n      totalCount\n      edges {\n        node {\n          id\n          name\n          description\n          createdAt\n          environments {\n            id\n            name\n            type\n            currentVersion\n            expired\n          }\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment EnvironmentFields on Environment {\n    id\n    name\n    type\n    ttlMinutes\n    expiresAt\n    expired\n    currentVersion\n    createdAt\n    tasks(first: 10) {\n      totalCount\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  fragment EnvironmentFields on Environment {\n    id\n    name\n    type\n    ttlMinutes\n    expiresAt\n    expired\n    currentVersion\n    createdAt\n    tasks(first: 10) {\n      totalCount\n      edges {\n        node {\n          ...TaskSummaryFields\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Project($id: ID!) {\n    project(id: $id) {\n      id\n      name\n      description\n      teamsWebhookUrl\n      emailRecipients\n      createdAt\n      environments {\n        ...EnvironmentFields\n      }\n    }\n  }\n"): (typeof documents)["\n  query Project($id: ID!) {\n    project(id: $id) {\n      id\n      name\n      description\n      teamsWebhookUrl\n      emailRecipients\n      createdAt\n      environments {\n        ...EnvironmentFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CreateProject($input: CreateProjectInput!) {\n    createProject(input: $input) {\n      project {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation CreateProject($input: CreateProjectInput!) {\n    createProject(input: $input) {\n      project {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CreateEnvironment($input: CreateEnvironmentInput!) {\n    createEnvironment(input: $input) {\n      environment {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation CreateEnvironment($input: CreateEnvironmentInput!) {\n    createEnvironment(input: $input) {\n      environment {\n        id\n        name\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation Deploy($input: DeployInput!) {\n    deploy(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      deduplicated\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation Deploy($input: DeployInput!) {\n    deploy(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      deduplicated\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CreateSandbox($input: CreateSandboxInput!) {\n    createSandbox(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation CreateSandbox($input: CreateSandboxInput!) {\n    createSandbox(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation BackupDatabase($input: BackupDatabaseInput!) {\n    backupDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation BackupDatabase($input: BackupDatabaseInput!) {\n    backupDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation RestoreDatabase($input: RestoreDatabaseInput!) {\n    restoreDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation RestoreDatabase($input: RestoreDatabaseInput!) {\n    restoreDatabase(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation RestartWorkload($input: RestartWorkloadInput!) {\n    restartWorkload(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation RestartWorkload($input: RestartWorkloadInput!) {\n    restartWorkload(input: $input) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Backups($entityId: String!) {\n    tasks(first: 50, filter: { entityId: $entityId, type: [DB_BACKUP], status: [COMPLETED] }) {\n      edges {\n        node {\n          id\n          createdAt\n          artifacts {\n            ...ArtifactFields\n          }\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query Backups($entityId: String!) {\n    tasks(first: 50, filter: { entityId: $entityId, type: [DB_BACKUP], status: [COMPLETED] }) {\n      edges {\n        node {\n          id\n          createdAt\n          artifacts {\n            ...ArtifactFields\n          }\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CancelTask($id: ID!) {\n    cancelTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation CancelTask($id: ID!) {\n    cancelTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation RetryTask($id: ID!) {\n    retryTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n        steps {\n          ...StepFields\n        }\n        artifacts {\n          ...ArtifactFields\n        }\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation RetryTask($id: ID!) {\n    retryTask(id: $id) {\n      task {\n        ...TaskSummaryFields\n        steps {\n          ...StepFields\n        }\n        artifacts {\n          ...ArtifactFields\n        }\n      }\n      userErrors {\n        ...UserErrorFields\n      }\n    }\n  }\n"];

export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}

export type DocumentType<TDocumentNode extends DocumentNode<any, any>> = TDocumentNode extends DocumentNode<  infer TType,  any>  ? TType  : never;