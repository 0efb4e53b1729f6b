// Form helpers: userErrors are shown next to the input their `field` path names (matched on
// the path's last element), the rest above the buttons; submit buttons show a pending state.
import { useId, type ReactNode } from 'react';
import type { UserErrorFieldsFragment } from '../gql/graphql';

export type UserErrors = readonly UserErrorFieldsFragment[];

export class FieldErrors {
  constructor(
    private readonly errors: UserErrors,
    private readonly fields: readonly string[],
  ) {}

  /** The message for one input, by its name in the mutation's input. */
  for(field: string): string | undefined {
    return this.errors.find((e) => e.field.length && e.field[e.field.length - 1] === field)
      ?.message;
  }

  /** Errors that name no input of this form. */
  get general(): UserErrors {
    return this.errors.filter(
      (e) => !e.field.length || !this.fields.includes(e.field[e.field.length - 1]),
    );
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
