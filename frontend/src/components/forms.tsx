// Form helpers: userErrors are shown next to the input their `field` path names (matched on
// the path's last element), the rest above the buttons; submit buttons show a pending state.
import { useId, type ReactNode } from 'react';
import type { UserErrorFieldsFragment } from '../gql/graphql';

export type UserErrors = readonly UserErrorFieldsFragment[];

function inputOf(path: readonly string[]): string | undefined {
  const last = path.length - 1;
  if (last >= 1 && /^\d+$/.test(path[last])) return path[last - 1];
  return last >= 0 ? path[last] : undefined;
}

export class FieldErrors {
  constructor(
    private readonly errors: UserErrors,
    private readonly fields: readonly string[],
  ) {}

  /** The message for one input, by its name in the mutation's input (an error about one
   * item of a list input, e.g. ["input", "emailRecipients", "1"], belongs to the list). */
  for(field: string): string | undefined {
    return this.errors.find((e) => inputOf(e.field) === field)?.message;
  }

  /** Errors that name no input of this form. */
  get general(): UserErrors {
    return this.errors.filter((e) => {
      const input = inputOf(e.field);
      return input === undefined || !this.fields.includes(input);
    });
  }

  get any(): boolean {
    return this.errors.length > 0;
  }
}

type FieldProps = {
  label: string;
  error?: string;
  hint?: string;
  children: (props: {
    id: string;
    'aria-invalid': boolean;
    'aria-describedby': string | undefined;
  }) => ReactNode;
};

/** A labelled input with its error message (aria-describedby) under it. */
export function Field({ label, error, hint, children }: FieldProps) {
  const id = useId();
  const errorId = `${id}-error`;
  const hintId = `${id}-hint`;
  const describedBy = [error ? errorId : null, hint ? hintId : null].filter(Boolean).join(' ');
  return (
    <div className={`field${error ? ' field-invalid' : ''}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, 'aria-invalid': Boolean(error), 'aria-describedby': describedBy || undefined })}
      {hint && !error && (
        <span className="field-hint" id={hintId}>
          {hint}
        </span>
      )}
      {error && (
        <span className="field-error" id={errorId} role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

export function FormErrors({ errors }: { errors: UserErrors }) {
  if (!errors.length) return null;
  return (
    <div className="form-errors" role="alert">
      {errors.map((e, i) => (
        <p key={i}>
          {e.message} <span className="code">{e.code}</span>
        </p>
      ))}
    </div>
  );
}

export function SubmitButton({
  pending,
  children,
  pendingText,
  className = 'primary',
}: {
  pending: boolean;
  children: ReactNode;
  pendingText: string;
  className?: string;
}) {
  return (
    <button type="submit" className={className} disabled={pending} aria-busy={pending}>
      {pending ? pendingText : children}
    </button>
  );
}

/** Mutation errors that are not userErrors (network, GraphQL) as one general error. */
export function asUserErrors(error: { message: string } | undefined | null): UserErrors {
  return error ? [{ field: [], message: error.message, code: 'ERROR' }] : [];
}
